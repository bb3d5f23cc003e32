//! The simulated modem on a real PTY, driven through the same code path as a real modem:
//! `AtPort` on the stable symlink plus `AtModem`, against a scripted radio environment whose
//! cells change over time.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use modem_hal::at::transport::{AtError, AtHandle, AtPort, PortConfig, Urc, UrcKind};
use modem_hal::modem::{AtModem, Feature, Modem, ModemError};
use modem_hal::radio::ServingCell;
use modem_hal::sim::env::{HeardCell, RadioEnv, ScriptedEnv, SimCard};
use modem_hal::sim::modem::{Profile, SimClock, SimConfig, SimHandle, SimModem};
use tokio::sync::broadcast;
use tokio::time::Instant;

/// Longest any condition below may take to become true.
const DEADLINE: Duration = Duration::from_secs(10);

fn cell(pci: u16, earfcn: u32, rsrp: f64, sinr: f64) -> HeardCell {
    HeardCell {
        tower: usize::from(pci),
        tac: 0x77b8,
        cell_id: 0x4caa700 + u64::from(pci),
        pci,
        earfcn,
        band: 3,
        bandwidth_mhz: 20.0,
        rsrp_dbm: rsrp,
        rsrq_db: -9.0,
        rssi_dbm: rsrp + 27.0,
        sinr_db: sinr,
    }
}

fn env(steps: Vec<(u64, Vec<HeardCell>)>) -> Arc<dyn RadioEnv> {
    Arc::new(ScriptedEnv {
        sim: SimCard {
            operator: "Pit Mobile".into(),
            mcc: 222,
            mnc: 88,
            mnc_3_digits: false,
        },
        steps: steps
            .into_iter()
            .map(|(ms, c)| (Duration::from_millis(ms), c))
            .collect(),
    })
}

/// Quick knobs: latencies at 1 %, outages of a few hundred milliseconds.
fn quick(profile: Profile) -> SimConfig {
    SimConfig {
        latency_scale: 0.01,
        reattach_outage: Duration::from_millis(200),
        reselect_gap: Duration::from_millis(100),
        reselect_after: Duration::from_millis(300),
        boot_time: Duration::from_millis(300),
        ..SimConfig::new(profile)
    }
}

struct Rig {
    _dir: tempfile::TempDir,
    sim: SimHandle,
    at: AtHandle,
    modem: AtModem<AtHandle>,
}

fn rig(cfg: SimConfig, env: Arc<dyn RadioEnv>) -> Rig {
    rig_at(cfg, env, 1.0)
}

/// A simulated modem whose world runs `speed` times faster than real time, and the driver.
fn rig_at(cfg: SimConfig, env: Arc<dyn RadioEnv>, speed: f64) -> Rig {
    let dir = tempfile::tempdir().expect("tempdir");
    let sim =
        SimModem::spawn(cfg, env, 0, SimClock::new(speed), dir.path()).expect("simulated modem");
    assert!(sim.path().starts_with(dir.path()));
    let mut pc = PortConfig::new(sim.path());
    pc.reopen_min = Duration::from_millis(20);
    pc.reopen_max = Duration::from_millis(200);
    let at = AtPort::spawn(pc);
    let modem = AtModem::new(at.clone());
    Rig {
        _dir: dir,
        sim,
        at,
        modem,
    }
}

/// Polls `f` every 20 ms until it yields `Some`, or panics after [`DEADLINE`].
async fn until<T, F, Fut>(what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let end = Instant::now() + DEADLINE;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < end, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The serving cell once `pred` holds for it.
async fn serving_until(
    m: &AtModem<AtHandle>,
    what: &str,
    pred: impl Fn(&ServingCell) -> bool,
) -> ServingCell {
    until(what, || async {
        m.serving_cell().await.ok().filter(|s| pred(s))
    })
    .await
}

/// The next URC of `kind` whose line satisfies `pred`.
async fn urc_until(
    rx: &mut broadcast::Receiver<Urc>,
    kind: UrcKind,
    pred: impl Fn(&str) -> bool,
) -> String {
    let end = Instant::now() + DEADLINE;
    loop {
        let left = end.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, rx.recv()).await {
            Ok(Ok(u)) if u.kind == kind && pred(&u.line) => return u.line,
            Ok(Ok(_)) | Ok(Err(broadcast::error::RecvError::Lagged(_))) => {}
            Ok(Err(e)) => panic!("URC stream ended: {e}"),
            Err(_) => panic!("no {kind:?} URC in time"),
        }
    }
}

#[tokio::test]
async fn metrics_follow_the_script_and_selection_is_sticky() {
    // A serves; B grows stronger while A is still fine (stay); then A degrades below
    // -115 dBm with B 3 dB+ stronger (move after reselect_after and the gap).
    let e = env(vec![
        (
            0,
            vec![cell(10, 1500, -85.0, 15.0), cell(20, 1350, -100.0, 5.0)],
        ),
        (
            1500,
            vec![cell(10, 1500, -105.0, 2.0), cell(20, 1350, -95.0, 9.0)],
        ),
        (
            3500,
            vec![cell(10, 1500, -118.0, -4.0), cell(20, 1350, -92.0, 11.0)],
        ),
    ]);
    let r = rig(quick(Profile::Rm520n), e);

    let id = r.modem.identity().await.expect("identity");
    assert_eq!(id.model.as_deref(), Some("RM520N-GL"));
    assert_eq!(id.sim_operator.as_deref(), Some("Pit Mobile"));
    assert!(id.imei.is_some(), "{id:?}");

    let s = serving_until(&r.modem, "serving A at -85", |s| s.rsrp_dbm == Some(-85.0)).await;
    assert_eq!(
        (s.pci, s.earfcn, s.cell_id),
        (Some(10), Some(1500), Some(0x4caa70a))
    );
    assert_eq!(s.sinr_db, Some(15.0));
    assert_eq!(s.state.as_deref(), Some("CONNECT"));
    assert!(
        r.modem
            .registration()
            .await
            .expect("registration")
            .is_registered()
    );

    // Sticky: A weakened to -105 while B is at -95, and A still serves.
    let s = serving_until(&r.modem, "A at -105", |s| s.rsrp_dbm == Some(-105.0)).await;
    assert_eq!(s.pci, Some(10));
    let n = r.modem.neighbours().await.expect("neighbours");
    assert_eq!(n.len(), 1, "{n:?}");
    assert_eq!(
        (n[0].pci, n[0].earfcn, n[0].rsrp_dbm),
        (Some(20), Some(1350), Some(-95.0))
    );
    assert_eq!(n[0].kind.as_deref(), Some("inter"));

    // A degraded: the modem moves to B, through a gap without service.
    let s = serving_until(&r.modem, "B serving", |s| s.pci == Some(20)).await;
    assert_eq!(s.rsrp_dbm, Some(-92.0));
    assert_eq!(r.sim.status().serving.map(|c| c.pci), Some(20));
    assert!(r.sim.counters().cell_changes >= 2);

    // AtModem never scans.
    assert_eq!(r.sim.counters().scans, 0);
    r.sim.shutdown();
}

#[tokio::test]
async fn urcs_inside_and_between_responses_are_separated() {
    let e = env(vec![(0, vec![cell(10, 1500, -85.0, 15.0)])]);
    let r = rig(quick(Profile::Ec25), e);
    let mut urcs = r.at.urcs();
    r.at.command("AT+CEREG=2", None).await.expect("CEREG=2");
    r.at.command("AT+QINDCFG=\"act\",1", None)
        .await
        .expect("QINDCFG");
    urc_until(&mut urcs, UrcKind::Qind, |l| l == "+QIND: \"act\",\"LTE\"").await;

    r.sim.inject_urc_in_response("+QIND: \"csq\",5,99");
    let s = r
        .modem
        .serving_cell()
        .await
        .expect("serving cell around a URC");
    assert_eq!(s.pci, Some(10));
    urc_until(&mut urcs, UrcKind::Qind, |l| l == "+QIND: \"csq\",5,99").await;

    // A URC inside the answer of AT+CEREG? itself is told apart from the solicited line.
    r.sim
        .inject_urc_in_response("+CEREG: 1,\"77B8\",\"4CAA70A\",7");
    let reg = r.modem.registration().await.expect("registration");
    assert_eq!((reg.stat, reg.n), (1, Some(2)));
    let line = urc_until(&mut urcs, UrcKind::Cereg, |_| true).await;
    assert_eq!(line, "+CEREG: 1,\"77B8\",\"4CAA70A\",7");
    assert_eq!(r.sim.counters().scans, 0);
}

#[tokio::test]
async fn lock_outage_locked_cell_and_release() {
    // A is stronger; the lock pins the weaker B.
    let e = env(vec![(
        0,
        vec![cell(10, 1500, -80.0, 20.0), cell(20, 1350, -97.0, 6.0)],
    )]);
    let r = rig(quick(Profile::Rm520n), e);
    let mut urcs = r.at.urcs();
    r.at.command("AT+CEREG=2", None).await.expect("CEREG=2");
    serving_until(&r.modem, "A serving", |s| s.pci == Some(10)).await;
    let caps = r.modem.capabilities().await.expect("capabilities");
    assert!(caps.lte_lock && caps.nr_lock && caps.reselect);

    let out = r.modem.lock_lte(1350, 20).await.expect("lock");
    assert_eq!(out.commands, ["AT+QNWLOCK=\"common/4g\",1,1350,20"]);
    // The re-attach: searching, then registered on B's cell.
    urc_until(&mut urcs, UrcKind::Cereg, |l| l == "+CEREG: 2").await;
    urc_until(&mut urcs, UrcKind::Cereg, |l| l.contains("\"4CAA714\"")).await;
    let s = serving_until(&r.modem, "B locked", |s| s.pci == Some(20)).await;
    assert_eq!(s.earfcn, Some(1350));
    assert_eq!(r.sim.status().lock, Some((1350, 20)));

    // NR lock in an LTE-only world is refused, not silently ignored.
    let err = r
        .modem
        .lock_nr(264, 504_990, 30, 41)
        .await
        .expect_err("NR lock");
    assert!(matches!(&err, ModemError::At(AtError::Cme { .. })), "{err}");

    let out = r.modem.release_lock().await.expect("release");
    assert_eq!(out.commands.len(), 2, "{out:?}");
    serving_until(&r.modem, "A again", |s| s.pci == Some(10)).await;
    assert_eq!(r.sim.status().lock, None);

    // Forced reselection (CFUN 4 then 1) comes back on the strongest cell.
    r.modem.reselect().await.expect("reselect");
    urc_until(&mut urcs, UrcKind::Cereg, |l| l == "+CEREG: 0").await;
    serving_until(&r.modem, "A after reselect", |s| s.pci == Some(10)).await;
    assert_eq!(r.sim.counters().scans, 0);
}

#[tokio::test]
async fn lock_on_a_module_without_qnwlock_is_unsupported() {
    let e = env(vec![(0, vec![cell(10, 1500, -80.0, 20.0)])]);
    let r = rig(quick(Profile::Ec25), e);
    let err = r.modem.lock_lte(1500, 10).await.expect_err("no lock");
    assert!(
        matches!(
            err,
            ModemError::Unsupported {
                feature: Feature::LteLock,
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(r.sim.status().lock, None);
    assert_eq!(r.sim.counters().locks, 0);
}

#[tokio::test]
async fn timeouts_injected_errors_and_garbage_are_recovered_from() {
    let e = env(vec![(0, vec![cell(10, 1500, -80.0, 20.0)])]);
    let r = rig(quick(Profile::Rm520n), e);
    serving_until(&r.modem, "served", |s| s.pci == Some(10)).await;

    r.sim.swallow_next();
    let err =
        r.at.command("AT+CSQ", Some(Duration::from_millis(300)))
            .await
            .expect_err("never answered");
    assert!(matches!(err, AtError::Timeout { .. }), "{err}");
    serving_until(&r.modem, "works after a timeout", |s| s.pci == Some(10)).await;

    r.sim.fail_next(3);
    let err = r.modem.serving_cell().await.expect_err("injected error");
    assert!(
        matches!(&err, ModemError::At(AtError::Cme { code, .. }) if code.code() == Some(3)),
        "{err}"
    );

    r.sim.inject_garbage(b"\xff\xfe\x00\x01garbage");
    until("garbage counted", || async {
        (r.at.counters().core.garbage_bytes > 0).then_some(())
    })
    .await;
    serving_until(&r.modem, "works after garbage", |s| s.pci == Some(10)).await;
}

#[tokio::test]
async fn the_port_vanishes_and_returns_through_the_symlink() {
    let e = env(vec![(0, vec![cell(10, 1500, -80.0, 20.0)])]);
    let r = rig(quick(Profile::Rm520n), e);
    serving_until(&r.modem, "served", |s| s.pci == Some(10)).await;
    assert!(r.sim.tty().is_some());

    r.sim.vanish(Duration::from_millis(300));
    until("port lost", || async {
        (!r.at.counters().connected).then_some(())
    })
    .await;
    until("port back", || async {
        let c = r.at.counters();
        (c.reconnects >= 1 && c.connected).then_some(())
    })
    .await;
    let second = r.sim.tty().expect("tty after return");
    assert_eq!(
        std::fs::read_link(r.sim.path()).expect("link"),
        second,
        "link re-pointed"
    );
    serving_until(&r.modem, "served after return", |s| s.pci == Some(10)).await;
    assert_eq!(r.at.counters().reconnects, 1);
}

#[tokio::test]
async fn no_coverage_is_no_service() {
    let e = env(vec![(0, vec![])]);
    let r = rig(quick(Profile::Rm520n), e);
    let err = r.modem.serving_cell().await.expect_err("no coverage");
    assert!(matches!(err, ModemError::NoService { .. }), "{err}");
    let reg = r.modem.registration().await.expect("registration");
    assert_eq!(reg.stat, 2);
    assert!(!reg.is_registered());
    let csq = r.at.command("AT+QCSQ", None).await.expect("QCSQ");
    assert_eq!(csq.lines, ["+QCSQ: \"NOSERVICE\""]);
    let id = r.modem.identity().await.expect("identity");
    assert_eq!(
        id.operator.and_then(|o| o.name),
        None,
        "+COPS: 0 names no operator"
    );
    assert!(!r.sim.status().attached);
    assert_eq!(r.sim.counters().scans, 0);
}

#[tokio::test]
async fn a_faster_world_clock_moves_the_script_and_the_outages() {
    // Sixty world seconds on A, then only B: at 20x this is three real seconds.
    let e = env(vec![
        (0, vec![cell(10, 1500, -80.0, 20.0)]),
        (60_000, vec![cell(20, 1350, -90.0, 12.0)]),
    ]);
    let cfg = SimConfig {
        reattach_outage: Duration::from_secs(4),
        reselect_gap: Duration::from_secs(1),
        ..quick(Profile::Ec25)
    };
    let r = rig_at(cfg, e, 20.0);
    serving_until(&r.modem, "A", |s| s.pci == Some(10)).await;
    serving_until(&r.modem, "B after the world minute", |s| s.pci == Some(20)).await;
    assert!(r.sim.clock().now() >= Duration::from_secs(60));
}
