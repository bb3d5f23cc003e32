//! `AtModem` over the real AT transport and a real PTY, against a scripted Quectel-like fake
//! modem that answers with the RADIO.md §2.2 capture texts.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::sync::mpsc as std_mpsc;
use std::time::Duration;

use modem_hal::at::transport::{AtPort, PortConfig};
use modem_hal::modem::{AtModem, Dialect, Feature, Modem, ModemError, Outage};
use nix::pty::openpty;
use nix::sys::termios::{SetArg, cfmakeraw, tcgetattr, tcsetattr};

/// A new PTY in raw mode: (master, slave kept open by the test, slave path).
fn pty() -> (OwnedFd, OwnedFd, std::path::PathBuf) {
    let p = openpty(None, None).expect("openpty");
    let mut t = tcgetattr(&p.slave).expect("tcgetattr");
    cfmakeraw(&mut t);
    tcsetattr(&p.slave, SetArg::TCSANOW, &t).expect("tcsetattr");
    let path = nix::unistd::ttyname(&p.slave).expect("ttyname");
    (p.master, p.slave, path)
}

/// Which fake modem.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fake {
    /// Quectel EC25 answering `AT+QNWLOCK=?` with the RG650V-NA capture.
    QuectelLock,
    /// Quectel EC25 answering `ERROR` to `AT+QNWLOCK=?`.
    QuectelNoLock,
    /// A 3GPP-only module.
    Generic,
    /// Sierra Wireless MC7455.
    Sierra,
}

/// The answer of the fake modem to `cmd` (without echo). `servingcell` answers LTE, then NSA,
/// then `+CME ERROR: 30` (coverage lost).
fn answer(cmd: &str, fake: Fake, servingcell_calls: &mut u32) -> String {
    let qnwlock = fake == Fake::QuectelLock;
    if fake == Fake::Sierra {
        let body = match cmd {
            "ATI" => {
                "Manufacturer: Sierra Wireless, Incorporated\r\nModel: MC7455\r\nRevision: SWI9X30C_02.24.05.06"
            }
            "AT+CGMM" => "MC7455",
            "AT+CFUN=?" => "+CFUN: (0,1,4),(0,1)",
            "AT!GSTATUS?" => {
                "!GSTATUS: \r\n\
                 System mode:   LTE            PS state:    Attached\r\n\
                 LTE band:      B66            LTE bw:      20 MHz\r\n\
                 PCC RxM RSSI:  -87            PCC RxM RSRP:  -119\r\n\
                 RSRQ (dB):     -11.6          Cell ID:     00a51b02 (10820354)\r\n\
                 SINR (dB):     12.2"
            }
            "AT!LTEINFO?" => {
                "!LTEINFO: \r\n\
                 Serving:   EARFCN MCC MNC   TAC      CID Bd D U SNR PCI  RSRQ   RSRP   RSSI RXLV\r\n\
                 \x20            800 310 410 35666 0A14666A  2 5 5  22 404 -14.1  -79.6  -45.5 --"
            }
            _ => return "\r\nERROR\r\n".into(),
        };
        return format!("\r\n{body}\r\n\r\nOK\r\n");
    }
    if fake == Fake::Generic {
        // A 3GPP-only module: no Quectel commands at all.
        let body = match cmd {
            "ATI" => "SIMCOM INCORPORATED\r\nSIM7600E-H\r\nRevision: SIM7600M22_V2.0",
            "AT+CGMM" => "SIMCOM_SIM7600E-H",
            "AT+CGSN" => "867698041234567",
            "AT+CEREG?" => "+CEREG: 2,1, 1F00, 79D903 ,7",
            "AT+CESQ" => "+CESQ: 99,99,255,255,20,80",
            "AT+CFUN=?" => "+CFUN: (0,1,4,6,7),(0,1)",
            _ => return "\r\nERROR\r\n".into(),
        };
        return format!("\r\n{body}\r\n\r\nOK\r\n");
    }
    let body = match cmd {
        "ATI" => "Quectel\r\nEC25\r\nRevision: EC25EFAR06A06M4G",
        "AT+CGMM" => "EC25",
        "AT+CGMR" => "EC25EFAR06A06M4G",
        "AT+CGSN" => "867698041234567",
        "AT+COPS?" => "+COPS: 0,0,\"T-Mobile Wholesale\",7",
        "AT+QSPN" => "+QSPN: \"T-Mobile\",\"T-Mobile\",\"\",0,\"310260\"",
        "AT+CEREG?" => "+CEREG: 2,1,\"1F00\",\"079D903\",7",
        "AT+CFUN=?" => "+CFUN: (0,1,4),(0,1)",
        "AT+QNWLOCK=?" if qnwlock => {
            "+QNWLOCK: \"common/4g\",(0-10),<freq>,<pci>\r\n\
             +QNWLOCK: \"common/5g\",<pci>,<freq>,<scs>,<band>\r\n\
             +QNWLOCK: \"save_ctrl\",(0,1),(0,1)\r\n\
             +QNWLOCK: \"common/4g_ext\",<num_of_cells>,<cell_list>"
        }
        "AT+QENG=\"servingcell\"" => {
            *servingcell_calls += 1;
            match *servingcell_calls {
                1 => {
                    "+QENG: \"servingcell\",\"NOCONN\",\"LTE\",\"FDD\",222,88,4CAA71F,28,1500,3,3,3,77B8,-84,-9,-56,21,35"
                }
                2 => {
                    "+QENG: \"servingcell\",\"NOCONN\"\r\n\
                     +QENG: \"LTE\",\"FDD\",515,03,3359966,1,150,1,5,5,4AA3,-89,-13,-58,16,15,20,-\r\n\
                     +QENG:\"NR5G-NSA\",515,03,832,-76,21,-11,528030,41,8,1"
                }
                _ => return "\r\n+CME ERROR: 30\r\n".into(),
            }
        }
        "AT+QENG=\"neighbourcell\"" => {
            "+QENG: \"neighbourcell intra\",\"LTE\",6300,188,-12,-105,-75,-20,23,4,12,10,62\r\n\
             +QENG: \"neighbourcell inter\",\"LTE\",1501,-,-,-,-,-,-,0,10,7"
        }
        c if qnwlock && c.starts_with("AT+QNWLOCK=\"common/") => "",
        "AT+CFUN=4" | "AT+CFUN=1" => "",
        _ => return "\r\nERROR\r\n".into(),
    };
    if body.is_empty() {
        "\r\nOK\r\n".into()
    } else {
        format!("\r\n{body}\r\n\r\nOK\r\n")
    }
}

/// The fake modem: echo on; reports every command line it receives on `seen`; returns when the
/// master side is closed.
fn modem(master: OwnedFd, fake: Fake, seen: std_mpsc::Sender<String>) {
    let mut port = File::from(master);
    let mut buf = [0u8; 256];
    let mut line = Vec::new();
    let mut servingcell_calls = 0;
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
            let _ = seen.send(cmd.clone());
            let out = format!("{cmd}\r{}", answer(&cmd, fake, &mut servingcell_calls));
            if port.write_all(out.as_bytes()).is_err() {
                return;
            }
        }
    }
}

struct Rig {
    modem: AtModem<modem_hal::at::transport::AtHandle>,
    seen: std_mpsc::Receiver<String>,
    _slave: OwnedFd,
    fake: std::thread::JoinHandle<()>,
}

fn rig(fake: Fake) -> Rig {
    let (master, slave, path) = pty();
    let (tx, seen) = std_mpsc::channel();
    let fake = std::thread::spawn(move || modem(master, fake, tx));
    let at = AtPort::spawn(PortConfig::new(path));
    Rig {
        modem: AtModem::new(at),
        seen,
        _slave: slave,
        fake,
    }
}

impl Rig {
    fn sent(&self) -> Vec<String> {
        self.seen.try_iter().collect()
    }

    fn finish(self) {
        let Rig {
            modem,
            _slave,
            fake,
            ..
        } = self;
        drop(modem);
        drop(_slave);
        // The port task closes the slave when its last handle is gone; the fake then sees EOF.
        fake.join().expect("fake modem");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quectel_identity_cells_and_locks() {
    let rig = rig(Fake::QuectelLock);
    let m = &rig.modem;

    let id = m.identity().await.expect("identity");
    assert_eq!(id.dialect, Dialect::Quectel);
    assert_eq!(id.manufacturer.as_deref(), Some("Quectel"));
    assert_eq!(id.model.as_deref(), Some("EC25"));
    assert_eq!(id.firmware.as_deref(), Some("EC25EFAR06A06M4G"));
    assert_eq!(id.imei.as_deref(), Some("867698041234567"));
    assert_eq!(id.sim_operator.as_deref(), Some("T-Mobile"));
    let op = id.operator.expect("operator");
    assert_eq!(
        (op.mode, op.name.as_deref(), op.act),
        (0, Some("T-Mobile Wholesale"), Some(7))
    );

    let reg = m.registration().await.expect("registration");
    assert!(reg.is_registered());
    assert_eq!(
        (reg.tac, reg.cell_id, reg.act),
        (Some(0x1F00), Some(0x079D903), Some(7))
    );

    // LTE serving cell.
    let s = m.serving_cell().await.expect("LTE serving cell");
    assert_eq!(s.rat.as_deref(), Some("LTE"));
    assert_eq!((s.mcc, s.mnc), (Some(222), Some(88)));
    assert_eq!(
        (s.cell_id, s.pci, s.earfcn, s.band),
        (Some(0x4CAA71F), Some(28), Some(1500), Some(3))
    );
    assert_eq!(
        (s.tac, s.rsrp_dbm, s.rsrq_db, s.sinr_db),
        (Some(0x77B8), Some(-84.0), Some(-9.0), Some(21.0))
    );
    assert!(s.nr.is_none());

    // NR5G-NSA: LTE anchor plus the NR leg (no space after `+QENG:`).
    let s = m.serving_cell().await.expect("NSA serving cell");
    assert_eq!(s.rat.as_deref(), Some("NR5G-NSA"));
    assert_eq!(
        (s.mcc, s.mnc, s.pci, s.earfcn),
        (Some(515), Some(3), Some(1), Some(150))
    );
    let nr = s.nr.expect("NR leg");
    assert_eq!(
        (nr.pci, nr.arfcn, nr.band),
        (Some(832), Some(528_030), Some(41))
    );
    assert_eq!(
        (nr.rsrp_dbm, nr.sinr_db, nr.rsrq_db),
        (Some(-76.0), Some(21.0), Some(-11.0))
    );

    // Coverage lost: +CME ERROR: 30 is a typed answer.
    let err = m.serving_cell().await.expect_err("no service");
    assert!(
        matches!(&err, ModemError::NoService { command } if command == "AT+QENG=\"servingcell\""),
        "{err}"
    );

    let n = m.neighbours().await.expect("neighbours");
    assert_eq!(n.len(), 2);
    assert_eq!(
        (n[0].kind.as_deref(), n[0].earfcn, n[0].pci),
        (Some("intra"), Some(6300), Some(188))
    );
    assert_eq!((n[0].rsrp_dbm, n[0].rsrq_db), (Some(-105.0), Some(-12.0)));
    assert_eq!(
        (n[1].kind.as_deref(), n[1].earfcn, n[1].pci),
        (Some("inter"), Some(1501), None)
    );

    let caps = m.capabilities().await.expect("capabilities");
    assert!(
        caps.lte_lock && caps.nr_lock && caps.reselect && caps.radio,
        "{caps:?}"
    );
    assert_eq!(m.capabilities().await.expect("cached"), caps);

    let before = rig.sent();
    let lte = m.lock_lte(1350, 195).await.expect("LTE lock");
    assert_eq!(lte.commands, ["AT+QNWLOCK=\"common/4g\",1,1350,195"]);
    assert_eq!(lte.outage, Outage::Reattach(Duration::from_secs(10)));
    let nr = m.lock_nr(264, 504_990, 30, 41).await.expect("NR lock");
    assert_eq!(nr.commands, ["AT+QNWLOCK=\"common/5g\",264,504990,30,41"]);
    let rel = m.release_lock().await.expect("release");
    assert_eq!(
        rel.commands,
        ["AT+QNWLOCK=\"common/4g\",0", "AT+QNWLOCK=\"common/5g\",0"]
    );
    let re = m.reselect().await.expect("reselect");
    assert_eq!(re.commands, ["AT+CFUN=4", "AT+CFUN=1"]);
    let off = m.radio(false).await.expect("radio off");
    assert_eq!(off.outage, Outage::UntilRadioOn);
    let on = m.radio(true).await.expect("radio on");
    assert_eq!(on.outage.expected(), Some(Duration::from_secs(10)));
    // A bad argument is refused before anything is sent.
    let err = m.lock_nr(264, 504_990, 45, 41).await.expect_err("bad SCS");
    assert!(
        matches!(
            err,
            ModemError::InvalidArgument {
                name: "scs_khz",
                ..
            }
        ),
        "{err}"
    );

    // Exactly these lines reached the modem, in order.
    let mut after = rig.sent();
    let probes: Vec<String> = before
        .iter()
        .chain(&after)
        .filter(|c| c.ends_with("=?"))
        .cloned()
        .collect();
    assert_eq!(
        probes,
        ["AT+QNWLOCK=?", "AT+CFUN=?"],
        "probed once, never AT+COPS=?"
    );
    after.retain(|c| !c.ends_with("=?"));
    assert_eq!(
        after,
        [
            "AT+QNWLOCK=\"common/4g\",1,1350,195",
            "AT+QNWLOCK=\"common/5g\",264,504990,30,41",
            "AT+QNWLOCK=\"common/4g\",0",
            "AT+QNWLOCK=\"common/5g\",0",
            "AT+CFUN=4",
            "AT+CFUN=1",
            "AT+CFUN=4",
            "AT+CFUN=1",
        ]
    );
    rig.finish();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_modem_without_qnwlock_answers_unsupported_without_retrying() {
    let rig = rig(Fake::QuectelNoLock);
    let m = &rig.modem;
    let caps = m.capabilities().await.expect("capabilities");
    assert!(!caps.lte_lock && !caps.nr_lock, "{caps:?}");
    assert!(caps.radio && caps.reselect, "{caps:?}");
    for _ in 0..2 {
        let err = m.lock_lte(1350, 195).await.expect_err("no LTE lock");
        assert_eq!(
            err,
            ModemError::Unsupported {
                feature: Feature::LteLock,
                dialect: Dialect::Quectel
            }
        );
    }
    let err = m
        .lock_nr(264, 504_990, 30, 41)
        .await
        .expect_err("no NR lock");
    assert!(
        matches!(
            err,
            ModemError::Unsupported {
                feature: Feature::NrLock,
                ..
            }
        ),
        "{err}"
    );
    let err = m.release_lock().await.expect_err("nothing to release");
    assert!(
        matches!(
            err,
            ModemError::Unsupported {
                feature: Feature::ReleaseLock,
                ..
            }
        ),
        "{err}"
    );
    // Reselection still works through CFUN.
    assert_eq!(
        m.reselect().await.expect("reselect").commands,
        ["AT+CFUN=4", "AT+CFUN=1"]
    );

    let sent = rig.sent();
    let qnwlock: Vec<&String> = sent.iter().filter(|c| c.contains("QNWLOCK")).collect();
    assert_eq!(
        qnwlock,
        ["AT+QNWLOCK=?"],
        "one probe, no lock attempt: {sent:?}"
    );
    assert!(!sent.iter().any(|c| c == "AT+COPS=?"));
    rig.finish();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_generic_modem_is_read_through_3gpp_commands_only() {
    let rig = rig(Fake::Generic);
    let m = &rig.modem;
    let id = m.identity().await.expect("identity");
    assert_eq!(id.dialect, Dialect::Generic);
    assert_eq!(id.model.as_deref(), Some("SIMCOM_SIM7600E-H"));
    assert_eq!(
        id.firmware.as_deref(),
        Some("SIM7600M22_V2.0"),
        "from ATI when CGMR fails"
    );
    assert_eq!((id.sim_operator, id.operator), (None, None));

    // The cell from +CEREG (unquoted, space-padded), the levels from +CESQ.
    let s = m.serving_cell().await.expect("serving cell");
    assert_eq!(s.rat.as_deref(), Some("LTE"));
    assert_eq!((s.tac, s.cell_id), (Some(0x1F00), Some(0x79D903)));
    assert_eq!((s.rsrp_dbm, s.rsrq_db), (Some(-61.0), Some(-10.0)));

    let err = m.neighbours().await.expect_err("no neighbour command");
    assert!(
        matches!(
            err,
            ModemError::Unsupported {
                feature: Feature::Neighbours,
                ..
            }
        ),
        "{err}"
    );
    let caps = m.capabilities().await.expect("capabilities");
    assert!(!caps.lte_lock && !caps.nr_lock && caps.radio, "{caps:?}");
    let err = m.lock_lte(1350, 195).await.expect_err("no lock");
    assert!(
        matches!(
            err,
            ModemError::Unsupported {
                dialect: Dialect::Generic,
                ..
            }
        ),
        "{err}"
    );

    let sent = rig.sent();
    assert!(
        !sent
            .iter()
            .any(|c| c.starts_with("AT+Q") || c == "AT+COPS=?"),
        "no Quectel command, no scan: {sent:?}"
    );
    rig.finish();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sierra_modem_is_read_through_its_own_commands() {
    let rig = rig(Fake::Sierra);
    let m = &rig.modem;
    assert_eq!(m.dialect().await.expect("dialect"), Dialect::Sierra);
    let s = m.serving_cell().await.expect("serving cell");
    assert_eq!(s.rat.as_deref(), Some("LTE"));
    assert_eq!((s.band, s.cell_id), (Some(66), Some(10_820_354)));
    assert_eq!(
        (s.rsrp_dbm, s.rsrq_db, s.sinr_db),
        (Some(-119.0), Some(-11.6), Some(12.2))
    );
    let n = m.neighbours().await.expect("neighbours");
    assert!(
        n.is_empty(),
        "the serving table alone lists no neighbour: {n:?}"
    );
    let caps = m.capabilities().await.expect("capabilities");
    assert!(!caps.lte_lock && caps.neighbours && caps.radio, "{caps:?}");
    let sent = rig.sent();
    assert_eq!(
        sent,
        ["ATI", "AT+CGMM", "AT!GSTATUS?", "AT!LTEINFO?", "AT+CFUN=?"],
        "no QNWLOCK probe on a Sierra modem"
    );
    rig.finish();
}
