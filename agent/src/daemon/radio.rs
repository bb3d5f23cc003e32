//! The modems of the links: each is polled by its own task (serving and neighbour cells every
//! `[towers] poll_ms`), and one task feeds the reports, the links' goodput and the GPS fix to
//! the tower logic ([`crate::towers::Towers`]) and carries out its decisions. What they learn is
//! shared with the core through [`RadioShared`]: the radio band of each link (for the
//! scheduler), the per-link radio and the towers status (for `pitlink links` / `towers`).

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use modem_hal::modem::Modem;
use modem_hal::radio::{Band, ServingCell};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::modems::{self, AnyModem};
use crate::config::Config;
use crate::diag::{LinkRadio, Status, TowerModem, TowersStatus};
use crate::towers::map::{CellMap, Fix};
use crate::towers::policy::{CellObs, Command, ModemObs};
use crate::towers::{Input, Towers};

/// What the radio side tells the core.
#[derive(Debug, Default)]
pub struct RadioShared {
    inner: Mutex<RadioState>,
}

/// The shared state itself.
#[derive(Debug, Clone, Default)]
pub struct RadioState {
    /// Per link: the modem's radio, when it has a modem.
    pub links: Vec<Option<LinkRadio>>,
    /// The tower policy's status.
    pub towers: TowersStatus,
}

impl RadioShared {
    /// State for `links` links.
    pub fn new(links: usize) -> Arc<Self> {
        Arc::new(Self {
            inner: Mutex::new(RadioState {
                links: vec![None; links],
                towers: TowersStatus::default(),
            }),
        })
    }

    /// A copy of the state.
    pub fn snapshot(&self) -> RadioState {
        self.lock().clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, RadioState> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// From a modem task to the tower task.
#[derive(Debug)]
enum Event {
    /// A poll: the serving cell and the neighbours, or why not.
    Report {
        modem: usize,
        serving: Result<Box<ServingCell>, String>,
        neighbours: Vec<CellObs>,
        neighbour_count: usize,
    },
    /// The modem's capabilities (once).
    Lockable { modem: usize, lockable: bool },
    /// A command's outcome.
    Done {
        command: Command,
        result: Result<String, String>,
    },
}

/// Starts the modem tasks and the tower task; returns their handles (none when no link has a
/// modem).
pub fn start(
    cfg: &Config,
    shared: Arc<RadioShared>,
    status: watch::Receiver<Status>,
    gps: watch::Receiver<Option<Fix>>,
    stop: CancellationToken,
) -> Vec<tokio::task::JoinHandle<()>> {
    let with_modem: Vec<usize> = cfg
        .links
        .iter()
        .enumerate()
        .filter(|(_, l)| l.modem.is_some() || l.modemmanager.is_some())
        .map(|(i, _)| i)
        .collect();
    if with_modem.is_empty() {
        return Vec::new();
    }
    let (ev_tx, ev_rx) = mpsc::channel::<Event>(64);
    let mut cmd_txs = vec![None; cfg.links.len()];
    let mut tasks = Vec::new();
    let poll = Duration::from_millis(cfg.towers.poll_ms);
    for &i in &with_modem {
        let (tx, rx) = mpsc::channel::<Command>(4);
        cmd_txs[i] = Some(tx);
        let link = cfg.links[i].clone();
        let span = tracing::info_span!("modem", link = %link.name);
        tasks.push(tokio::spawn(
            modem_task(i, link, poll, rx, ev_tx.clone(), stop.clone()).instrument(span),
        ));
    }
    drop(ev_tx);
    let map = match CellMap::load(&cfg.towers.map, cfg.towers.map_max_entries) {
        Ok(m) => m,
        Err(e) => {
            tracing::warn!("{e}; starting with an empty cell map");
            CellMap::new(cfg.towers.map_max_entries)
        }
    };
    {
        let mut st = shared.lock();
        st.towers.policy = cfg.towers.policy;
        st.towers.map_file = Some(cfg.towers.map.clone());
        st.towers.modems = with_modem
            .iter()
            .map(|&i| TowerModem {
                link: cfg.links[i].name.clone(),
                ..Default::default()
            })
            .collect();
        for &i in &with_modem {
            st.links[i] = Some(LinkRadio {
                modem: modems::describe(&cfg.links[i]).unwrap_or_default(),
                ..Default::default()
            });
        }
    }
    let towers = Towers::new(cfg.towers.rules.clone(), cfg.links.len(), map);
    let tower = TowerTask {
        towers,
        shared,
        status,
        gps,
        cmd_txs,
        with_modem,
        names: cfg.links.iter().map(|l| l.name.clone()).collect(),
        policy: cfg.towers.policy,
        map_file: cfg.towers.map.clone(),
        failures: 0,
    };
    tasks.push(tokio::spawn(
        tower
            .run(ev_rx, stop)
            .instrument(tracing::info_span!("towers")),
    ));
    tasks
}

/// Polls one modem and runs the commands sent to it.
async fn modem_task(
    index: usize,
    link: crate::config::LinkConfig,
    poll: Duration,
    mut cmds: mpsc::Receiver<Command>,
    events: mpsc::Sender<Event>,
    stop: CancellationToken,
) {
    let mut retry = Duration::from_secs(1);
    let modem: AnyModem = loop {
        match modems::open(&link, Duration::from_secs(5)).await {
            Ok(Some(m)) => break m,
            Ok(None) => return,
            Err(e) => {
                let _ = events
                    .send(Event::Report {
                        modem: index,
                        serving: Err(format!("{e:#}")),
                        neighbours: Vec::new(),
                        neighbour_count: 0,
                    })
                    .await;
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(retry) => {}
                }
                retry = (retry * 2).min(Duration::from_secs(30));
            }
        }
    };
    let mut caps_known = false;
    let mut tick = tokio::time::interval(poll);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {
                if !caps_known
                    && let Ok(c) = modem.capabilities().await
                {
                    caps_known = true;
                    let ev = Event::Lockable { modem: index, lockable: c.lte_lock };
                    if events.send(ev).await.is_err() {
                        return;
                    }
                }
                let serving = modem.serving_cell().await.map(Box::new).map_err(|e| e.to_string());
                let (neighbours, neighbour_count) = if serving.is_ok() {
                    match modem.neighbours().await {
                        Ok(n) => (n.iter().filter_map(CellObs::from_neighbour).collect(), n.len()),
                        Err(_) => (Vec::new(), 0),
                    }
                } else {
                    (Vec::new(), 0)
                };
                let ev = Event::Report { modem: index, serving, neighbours, neighbour_count };
                if events.send(ev).await.is_err() {
                    return;
                }
            }
            cmd = cmds.recv() => {
                let Some(command) = cmd else { return };
                let result = match command {
                    Command::Lock { cell, .. } => modem.lock_lte(cell.earfcn, cell.pci).await,
                    Command::Release { .. } => modem.release_lock().await,
                }
                .map(|o| o.commands.join("; "))
                .map_err(|e| e.to_string());
                if events.send(Event::Done { command, result }).await.is_err() {
                    return;
                }
            }
        }
    }
}

struct TowerTask {
    towers: Towers,
    shared: Arc<RadioShared>,
    status: watch::Receiver<Status>,
    gps: watch::Receiver<Option<Fix>>,
    cmd_txs: Vec<Option<mpsc::Sender<Command>>>,
    with_modem: Vec<usize>,
    names: Vec<String>,
    policy: bool,
    map_file: std::path::PathBuf,
    failures: u64,
}

/// How often the tower logic decides and the map is saved.
const DECIDE_EVERY: Duration = Duration::from_millis(500);
const SAVE_EVERY: Duration = Duration::from_secs(60);

impl TowerTask {
    async fn run(mut self, mut events: mpsc::Receiver<Event>, stop: CancellationToken) {
        let mut decide = tokio::time::interval(DECIDE_EVERY);
        decide.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut save = tokio::time::interval(SAVE_EVERY);
        save.tick().await;
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                ev = events.recv() => match ev {
                    Some(ev) => self.on_event(ev),
                    None => break,
                },
                _ = decide.tick() => self.decide(),
                _ = save.tick() => self.save().await,
            }
        }
        self.save().await;
    }

    fn on_event(&mut self, ev: Event) {
        let now = crate::now_us();
        match ev {
            Event::Report {
                modem,
                serving,
                neighbours,
                neighbour_count,
            } => {
                let mut st = self.shared.lock();
                let Some(Some(r)) = st.links.get_mut(modem) else {
                    return;
                };
                r.updated_us = now;
                r.neighbours = neighbour_count;
                let obs = match serving {
                    Ok(s) => {
                        r.error = None;
                        r.rat = s.rat.clone();
                        r.state = s.state.clone();
                        r.pci = s.pci;
                        r.earfcn = s.earfcn.or(s.arfcn);
                        r.cell_id = s.cell_id;
                        r.tac = s.tac;
                        r.band = s.band;
                        r.rsrp_dbm = s.rsrp_dbm;
                        r.rsrq_db = s.rsrq_db;
                        r.sinr_db = s.sinr_db;
                        r.quality = Band::of_serving(&s);
                        ModemObs {
                            serving: CellObs::from_serving(&s),
                            neighbours,
                        }
                    }
                    Err(e) => {
                        if r.error.as_deref() != Some(e.as_str()) {
                            tracing::warn!(link = %self.names[modem], "modem: {e}");
                        }
                        r.error = Some(e);
                        // No service: the link's radio is unusable until the next report.
                        r.quality = Some(Band::Unusable);
                        r.rsrp_dbm = None;
                        r.sinr_db = None;
                        r.pci = None;
                        ModemObs::default()
                    }
                };
                drop(st);
                self.towers.apply(&Input::Report {
                    at_us: now,
                    modem,
                    obs,
                });
            }
            Event::Lockable { modem, lockable } => {
                self.towers.apply(&Input::Lockable { modem, lockable });
            }
            Event::Done { command, result } => {
                let link = &self.names[command.modem()];
                match result {
                    Ok(sent) => tracing::info!(link = %link, "tower command done: {sent}"),
                    Err(e) => {
                        self.failures += 1;
                        tracing::warn!(link = %link, "tower command {command:?} failed: {e}");
                        self.towers.apply(&Input::Failed { command });
                    }
                }
            }
        }
        self.publish();
    }

    fn decide(&mut self) {
        let now = crate::now_us();
        if let Some(fix) = *self.gps.borrow() {
            self.towers.apply(&Input::Fix { fix });
        }
        let links: Vec<(bool, f64)> = self
            .status
            .borrow()
            .links
            .iter()
            .map(|l| {
                (
                    l.state == "up",
                    l.metrics.goodput_bytes_s.unwrap_or(0.0) * 8.0,
                )
            })
            .collect();
        for (i, (up, goodput_bps)) in links.into_iter().enumerate() {
            self.towers.apply(&Input::Link {
                modem: i,
                up,
                goodput_bps,
            });
        }
        if self.policy
            && let Some(d) = self.towers.apply(&Input::Decide { at_us: now })
        {
            let m = d.command.modem();
            tracing::info!(link = %self.names[m], "tower decision: {:?}: {}", d.command, d.reason);
            match self.cmd_txs.get(m).and_then(Option::as_ref) {
                Some(tx) if tx.try_send(d.command).is_ok() => {}
                _ => {
                    self.failures += 1;
                    self.towers.apply(&Input::Failed { command: d.command });
                }
            }
        }
        self.publish();
    }

    fn publish(&self) {
        let policy = self.towers.policy();
        let map = self.towers.map();
        let mut st = self.shared.lock();
        for (i, view) in policy.modems().iter().enumerate() {
            if let Some(Some(r)) = st.links.get_mut(i) {
                r.locked = view.locked;
            }
        }
        st.towers.modems = self
            .with_modem
            .iter()
            .map(|&i| {
                let v = &policy.modems()[i];
                TowerModem {
                    link: self.names[i].clone(),
                    serving: v.obs.serving.map(|s| s.cell),
                    locked: v.locked,
                    lockable: v.lockable,
                }
            })
            .collect();
        st.towers.decisions = policy.decisions().cloned().collect();
        st.towers.switches = policy.switches();
        st.towers.failures = self.failures;
        st.towers.position = *self.gps.borrow();
        st.towers.map_entries = map.len();
        st.towers.map_squares = map.squares();
    }

    async fn save(&self) {
        let map = self.towers.map().clone();
        let path = self.map_file.clone();
        match tokio::task::spawn_blocking(move || map.save(&path)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!("cannot save the cell map: {e}"),
            Err(e) => tracing::warn!("cannot save the cell map: {e}"),
        }
    }
}
