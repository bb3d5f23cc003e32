//! The simulated world running: a [`World`], one simulated modem per scenario modem on a PTY,
//! a simulated GPS receiver on a PTY, and optionally one emulated link per modem in front of a
//! broker, whose rate and latency
//! follow the cell its modem is served by (every 100 ms). A lock that moves a modem to a
//! better tower therefore really raises that link's throughput.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use serde::Serialize;

use super::env::{HeardCell, RadioEnv};
use super::link::{LinkControl, LinkEmulator, LinkParams};
use super::modem::{SimClock, SimConfig, SimHandle, SimModem};
use super::world::{LinkQuality, Position, World};

/// How often link parameters follow the radio.
pub const FOLLOW_EVERY: Duration = Duration::from_millis(100);

/// Options of a running world.
#[derive(Debug, Clone)]
pub struct WorldOptions {
    /// World speed (1.0 = real time).
    pub speed: f64,
    /// Simulated modem settings, for every modem.
    pub modem: SimConfig,
    /// Start a link emulator per modem in front of this broker.
    pub broker: Option<SocketAddr>,
    /// Seed of the links' jitter.
    pub seed: u64,
}

/// One modem and its link, as a snapshot.
#[derive(Debug, Clone, Serialize)]
pub struct ModemSnapshot {
    /// Scenario name of the modem (the link name).
    pub name: String,
    /// The SIM's carrier.
    pub carrier: String,
    /// Registered on a cell.
    pub attached: bool,
    /// The serving cell.
    pub serving: Option<HeardCell>,
    /// The tower's name.
    pub tower: Option<String>,
    /// The locked (EARFCN, PCI).
    pub lock: Option<(u32, u16)>,
    /// What the link can do now (before faults).
    pub quality: LinkQuality,
    /// Whether a fault holds the link down.
    pub faulted: bool,
}

/// A running world.
#[derive(Debug)]
pub struct SimWorld {
    world: Arc<World>,
    clock: SimClock,
    modems: Vec<SimHandle>,
    links: Vec<LinkControl>,
    state: Arc<Mutex<Vec<(LinkQuality, bool)>>>,
    gps: super::gps::SimGps,
    _follow: Option<AbortOnDrop>,
}

/// Aborts the follower task when the world is dropped.
#[derive(Debug)]
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl SimWorld {
    /// Starts the modems (their links in `dir`, created if missing) and, with a broker, the
    /// link emulators.
    pub async fn start(world: World, dir: &Path, opts: WorldOptions) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let world = Arc::new(world);
        let clock = SimClock::new(opts.speed);
        let env: Arc<dyn RadioEnv> = world.clone();
        let mut modems = Vec::new();
        for i in 0..world.modems() {
            modems.push(SimModem::spawn(
                opts.modem.clone(),
                env.clone(),
                i,
                clock,
                dir,
            )?);
        }
        let n = modems.len();
        let state = Arc::new(Mutex::new(vec![
            (
                LinkQuality {
                    up: false,
                    capacity_bps: 0.0,
                    one_way_latency: Duration::ZERO,
                    sinr_db: None,
                },
                false
            );
            n
        ]));
        let mut links = Vec::new();
        let mut follow = None;
        if let Some(broker) = opts.broker {
            for i in 0..n {
                let down = LinkParams {
                    up: false,
                    ..LinkParams::default()
                };
                links.push(
                    LinkEmulator::spawn(
                        "127.0.0.1:0".parse().map_err(std::io::Error::other)?,
                        broker,
                        down,
                        opts.seed ^ i as u64,
                    )
                    .await?,
                );
            }
            let (w, m, l, s) = (world.clone(), modems.clone(), links.clone(), state.clone());
            follow = Some(AbortOnDrop(tokio::spawn(async move {
                let mut tick = tokio::time::interval(FOLLOW_EVERY);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tick.tick().await;
                    follow_once(&w, clock, &m, &l, &s);
                }
            })));
        }
        let gps = super::gps::SimGps::spawn(world.clone(), clock, dir, 5.0)?;
        let sw = Self {
            gps,
            world,
            clock,
            modems,
            links,
            state,
            _follow: follow,
        };
        if !sw.links.is_empty() {
            follow_once(&sw.world, sw.clock, &sw.modems, &sw.links, &sw.state);
        }
        Ok(sw)
    }

    /// The world.
    pub fn world(&self) -> &World {
        &self.world
    }

    /// The world clock.
    pub fn clock(&self) -> SimClock {
        self.clock
    }

    /// The simulated modems, in scenario order.
    pub fn modems(&self) -> &[SimHandle] {
        &self.modems
    }

    /// The simulated GPS receiver's port (`<dir>/gps0`, NMEA RMC + GGA at 5 Hz).
    pub fn gps_path(&self) -> &Path {
        self.gps.path()
    }

    /// The simulated GPS receiver (for fault injection).
    pub fn gps(&self) -> &super::gps::SimGps {
        &self.gps
    }

    /// The emulated links (empty without a broker).
    pub fn links(&self) -> &[LinkControl] {
        &self.links
    }

    /// Where the car is now.
    pub fn position(&self) -> Position {
        self.world.position(self.clock.now())
    }

    /// Holds link `i` down (a blackhole) whatever its radio, or lets it follow the radio again.
    pub fn fault(&self, i: usize, down: bool) {
        if let Some(s) = self
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get_mut(i)
        {
            s.1 = down;
        }
        follow_once(
            &self.world,
            self.clock,
            &self.modems,
            &self.links,
            &self.state,
        );
    }

    /// Every modem and its link now.
    pub fn snapshot(&self) -> Vec<ModemSnapshot> {
        let state = self
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let now = self.clock.now();
        let qualities = self.world.links(now, &serving_towers(&self.modems));
        self.modems
            .iter()
            .enumerate()
            .map(|(i, m)| {
                let s = m.status();
                let sc = &self.world.scenario();
                ModemSnapshot {
                    name: sc.modems[i].name.clone(),
                    carrier: sc.modems[i].carrier.get_ref().clone(),
                    attached: s.attached,
                    tower: s.serving.as_ref().map(|c| sc.towers[c.tower].name.clone()),
                    serving: s.serving,
                    lock: s.lock,
                    quality: qualities[i],
                    faulted: state.get(i).is_some_and(|x| x.1),
                }
            })
            .collect()
    }

    /// Stops the modems (links stop with the runtime).
    pub fn shutdown(&self) {
        for m in &self.modems {
            m.shutdown();
        }
        for l in &self.links {
            l.blackhole(true);
            l.reset();
        }
    }
}

/// The tower serving each modem, `None` while it is not attached.
fn serving_towers(modems: &[SimHandle]) -> Vec<Option<usize>> {
    modems
        .iter()
        .map(|m| {
            let s = m.status();
            s.serving.filter(|_| s.attached).map(|c| c.tower)
        })
        .collect()
}

fn follow_once(
    world: &World,
    clock: SimClock,
    modems: &[SimHandle],
    links: &[LinkControl],
    state: &Mutex<Vec<(LinkQuality, bool)>>,
) {
    let now = clock.now();
    let q = world.links(now, &serving_towers(modems));
    let mut st = state.lock().unwrap_or_else(PoisonError::into_inner);
    for (i, l) in links.iter().enumerate() {
        let faulted = st.get(i).is_some_and(|x| x.1);
        if let Some(x) = st.get_mut(i) {
            x.0 = q[i];
        }
        let up = q[i].up && !faulted;
        l.set(LinkParams {
            rate_bps: q[i].capacity_bps,
            latency: q[i].one_way_latency,
            jitter: Duration::ZERO,
            up,
        });
    }
}
