//! The whole simulated world: the shipped track, three simulated modems on PTYs read through
//! `AtPort` + `AtModem`, and their emulated links whose parameters follow the serving cells.

use std::time::Duration;

use modem_hal::at::transport::{AtPort, PortConfig};
use modem_hal::modem::{AtModem, Modem};
use modem_hal::sim::drive::{SimWorld, WorldOptions};
use modem_hal::sim::modem::{Profile, SimConfig};
use modem_hal::sim::scenario::Scenario;
use modem_hal::sim::world::World;
use tokio::time::Instant;

const DEADLINE: Duration = Duration::from_secs(15);

async fn until<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let end = Instant::now() + DEADLINE;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < end, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A TCP "broker" that swallows everything (the links only need a far end).
async fn sink() -> std::net::SocketAddr {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = l.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                while let Ok(n) = tokio::io::AsyncReadExt::read(&mut s, &mut buf).await {
                    if n == 0 {
                        break;
                    }
                }
            });
        }
    });
    addr
}

#[tokio::test]
async fn modems_and_links_follow_the_track() {
    let dir = tempfile::tempdir().expect("tempdir");
    let world = World::new(Scenario::builtin());
    let opts = WorldOptions {
        speed: 1.0,
        modem: SimConfig {
            latency_scale: 0.05,
            boot_time: Duration::from_millis(100),
            ..SimConfig::new(Profile::Rm520n)
        },
        broker: Some(sink().await),
        seed: 1,
    };
    let sim = SimWorld::start(world, dir.path(), opts)
        .await
        .expect("start");
    assert_eq!(sim.modems().len(), 3);
    assert_eq!(sim.links().len(), 3);
    // Every modem camps on a cell of its carrier; its link follows that cell.
    let snap = until("three attached modems", || {
        let s = sim.snapshot();
        s.iter().all(|m| m.attached).then_some(s)
    })
    .await;
    for (i, m) in snap.iter().enumerate() {
        let tower = m.serving.as_ref().expect("serving").tower;
        assert_eq!(
            sim.world().scenario().towers[tower].carrier.get_ref(),
            &m.carrier,
            "modem {i} is served by its own carrier"
        );
    }
    until("links following the radio", || {
        let snap = sim.snapshot();
        sim.links()
            .iter()
            .zip(&snap)
            .all(|(l, m)| {
                let p = l.params();
                p.up == m.quality.up
                    && (p.rate_bps - m.quality.capacity_bps).abs()
                        <= 0.5 * m.quality.capacity_bps + 1.0
            })
            .then_some(())
    })
    .await;
    // The driver reads the same serving cell through the real AT path.
    let port = AtPort::spawn(PortConfig::new(sim.modems()[1].path()));
    let modem = AtModem::new(port);
    let serving = modem.serving_cell().await.expect("serving cell");
    let now = sim.snapshot();
    let s = now[1].serving.as_ref().expect("serving");
    assert_eq!(serving.pci, Some(s.pci));
    assert_eq!(serving.earfcn, Some(s.earfcn));
    let id = modem.identity().await.expect("identity");
    assert_eq!(id.sim_operator.as_deref(), Some(now[1].carrier.as_str()));
    // A fault holds a link down whatever its radio; lifting it restores the radio's verdict.
    sim.fault(0, true);
    assert!(!sim.links()[0].params().up);
    assert!(sim.snapshot()[0].faulted);
    sim.fault(0, false);
    until("link 0 back", || sim.links()[0].params().up.then_some(())).await;
    sim.shutdown();
}
