//! `pitlink bench track`: laps of a track scenario with the car's simulated modems, once with
//! the tower policy and once with the modems' own sticky selection (`autonomous`), in simulated
//! time. The modems are the simulated Quectel cores answering the same AT commands a real
//! modem gets, read through the same parser; goodput is what the world's links carry given the
//! cells the modems are really served by.
//!
//! Figures per run: mean aggregate goodput; stall time, the time the bonded uplink (all links
//! together) could carry less than the live load `live_mbit_s` (the live view falls behind);
//! per-link stall time beside it (summed over links: time a link carried less than
//! `link_stall_mbit_s`, down and re-attaching included); switches (policy locks and releases;
//! the modems' own cell changes are reported beside them).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Result;
use modem_hal::at::parse::parse_text;
use modem_hal::sim::env::RadioEnv;
use modem_hal::sim::modem::{Profile, SimConfig, SimCore};
use modem_hal::sim::scenario::Scenario;
use modem_hal::sim::world::World;
use serde::Serialize;

use crate::towers::map::{CellMap, Fix};
use crate::towers::policy::{CellObs, Command, ModemObs, PolicyConfig};
use crate::towers::{Input, Towers};

/// Options of the benchmark.
#[derive(Debug, Clone)]
pub struct TrackOptions {
    /// Scenario file (default: the shipped ring).
    pub scenario: Option<PathBuf>,
    /// Laps per run.
    pub laps: u32,
    /// Simulation step.
    pub step: Duration,
    /// How often each modem is polled for its cells.
    pub poll: Duration,
    /// The live load (Mbit/s): the bonded uplink is stalled below it.
    pub live_mbit_s: f64,
    /// A link carrying less than this is stalled (Mbit/s).
    pub link_stall_mbit_s: f64,
    /// Print one line per simulated second to stderr.
    pub trace: bool,
    /// Write the policy run's inputs as JSON lines here (for replay).
    pub record: Option<PathBuf>,
    /// Re-attach outage of the simulated modems.
    pub reattach: Duration,
    /// Policy thresholds.
    pub policy: PolicyConfig,
}

impl Default for TrackOptions {
    fn default() -> Self {
        Self {
            scenario: None,
            laps: 3,
            step: Duration::from_millis(100),
            poll: Duration::from_secs(1),
            live_mbit_s: 8.0,
            link_stall_mbit_s: 2.0,
            trace: false,
            record: None,
            reattach: Duration::from_secs(4),
            policy: PolicyConfig::default(),
        }
    }
}

/// Figures of one run.
#[derive(Debug, Clone, Serialize)]
pub struct RunFigures {
    /// Mean aggregate goodput of the links, Mbit/s.
    pub goodput_mbit_s: f64,
    /// Time the bonded uplink carried less than the live load, seconds.
    pub stall_s: f64,
    /// Time links carried less than the link stall threshold, summed over links, seconds.
    pub link_stall_s: f64,
    /// Tower switches commanded by the policy (locks and releases).
    pub switches: u64,
    /// Serving-cell changes made by the modems themselves.
    pub cell_changes: u64,
    /// Mean aggregate goodput per lap, Mbit/s.
    pub lap_goodput: Vec<f64>,
    /// Stall time of the bonded uplink per lap, seconds.
    pub lap_stall_s: Vec<f64>,
}

/// The report.
#[derive(Debug, Clone, Serialize)]
pub struct TrackReport {
    /// Scenario name.
    pub scenario: String,
    /// Laps per run.
    pub laps: u32,
    /// Lap time, seconds.
    pub lap_s: f64,
    /// Modems.
    pub modems: usize,
    /// Towers.
    pub towers: usize,
    /// The live load, Mbit/s.
    pub live_mbit_s: f64,
    /// The per-link stall threshold, Mbit/s.
    pub link_stall_mbit_s: f64,
    /// With the tower policy (and its learned map).
    pub policy: RunFigures,
    /// With the modems' own sticky selection.
    pub autonomous: RunFigures,
    /// policy ÷ autonomous goodput.
    pub ratio_goodput: f64,
    /// policy ÷ autonomous stall time.
    pub ratio_stall: f64,
    /// Per lap goodput of the policy run (it learns the map lap after lap).
    pub lap_goodput: Vec<f64>,
    /// Cells in the learned map at the end, and squares covered.
    pub map_entries: usize,
    /// Squares of the map covered.
    pub map_squares: usize,
    /// The policy's last decisions with their reasons.
    pub last_decisions: Vec<String>,
    /// Goals and whether they were met.
    pub goals: Goals,
    /// Wall time of the benchmark, seconds.
    pub wall_s: f64,
}

/// The goals.
#[derive(Debug, Clone, Serialize)]
pub struct Goals {
    /// ratio_goodput ≥ 1.3.
    pub ratio_goodput_ge_1_3: bool,
    /// ratio_stall ≤ 0.5.
    pub ratio_stall_le_0_5: bool,
    /// Last lap better than the first.
    pub last_lap_better: bool,
}

/// Runs the benchmark.
pub fn track(opts: &TrackOptions) -> Result<TrackReport> {
    let started = std::time::Instant::now();
    let scenario = match &opts.scenario {
        Some(p) => Scenario::load(p)?,
        None => Scenario::builtin(),
    };
    let world = World::new(scenario);
    let mut inputs = Vec::new();
    let (policy, map, decisions) = run(&world, opts, true, &mut inputs);
    let (autonomous, _, _) = run(&world, opts, false, &mut Vec::new());
    if let Some(path) = &opts.record {
        let mut text = String::new();
        for i in &inputs {
            text += &serde_json::to_string(i)?;
            text.push('\n');
        }
        std::fs::write(path, text)
            .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))?;
    }
    let ratio = |a: f64, b: f64| {
        if b > 0.0 {
            a / b
        } else if a > 0.0 {
            f64::INFINITY
        } else {
            1.0
        }
    };
    let ratio_goodput = ratio(policy.goodput_mbit_s, autonomous.goodput_mbit_s);
    let ratio_stall = ratio(policy.stall_s, autonomous.stall_s);
    let lap_goodput = policy.lap_goodput.clone();
    let goals = Goals {
        ratio_goodput_ge_1_3: ratio_goodput >= 1.3,
        ratio_stall_le_0_5: ratio_stall <= 0.5,
        last_lap_better: lap_goodput.len() >= 2 && lap_goodput.last() > lap_goodput.first(),
    };
    Ok(TrackReport {
        scenario: world.scenario().name.clone(),
        laps: opts.laps,
        lap_s: world.lap_time().as_secs_f64(),
        modems: world.modems(),
        towers: world.scenario().towers.len(),
        live_mbit_s: opts.live_mbit_s,
        link_stall_mbit_s: opts.link_stall_mbit_s,
        policy,
        autonomous,
        ratio_goodput: round3(ratio_goodput),
        ratio_stall: round3(ratio_stall),
        lap_goodput,
        map_entries: map.len(),
        map_squares: map.squares(),
        last_decisions: decisions,
        goals,
        wall_s: round3(started.elapsed().as_secs_f64()),
    })
}

fn round3(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}

/// Sends `line` to `modem` and parses the answer.
fn ask(
    core: &mut SimCore,
    line: &str,
    now: Duration,
    env: &dyn RadioEnv,
) -> modem_hal::radio::RadioReport {
    let reply = core.command(line, now, env);
    parse_text(&String::from_utf8_lossy(&reply.bytes)).report
}

fn run(
    world: &World,
    opts: &TrackOptions,
    with_policy: bool,
    inputs: &mut Vec<Input>,
) -> (RunFigures, CellMap, Vec<String>) {
    let n = world.modems();
    let cfg = SimConfig {
        reattach_outage: opts.reattach,
        ..SimConfig::new(Profile::Rm520n)
    };
    let mut cores: Vec<SimCore> = (0..n).map(|i| SimCore::new(cfg.clone(), i)).collect();
    let mut towers = Towers::new(opts.policy.clone(), n, CellMap::new(50_000));
    let mut feed = |towers: &mut Towers, input: Input| {
        let d = towers.apply(&input);
        inputs.push(input);
        d
    };
    let lap = world.lap_time();
    let end = lap * opts.laps;
    let dt = opts.step.as_secs_f64();
    let link_stall_bps = opts.link_stall_mbit_s * 1e6;
    let live_bps = opts.live_mbit_s * 1e6;
    let mut lap_bits = vec![0.0; opts.laps as usize];
    let mut lap_stall = vec![0.0; opts.laps as usize];
    let mut link_stall = 0.0;
    let mut last_poll = vec![None::<Duration>; n];
    let mut now = Duration::ZERO;
    let trace = opts.trace;
    while now < end {
        for c in cores.iter_mut() {
            let _ = c.tick(now, world);
        }
        let serving: Vec<Option<usize>> = cores
            .iter()
            .map(|c| {
                let s = c.status(now, world);
                s.serving.filter(|_| s.attached).map(|x| x.tower)
            })
            .collect();
        let links = world.links(now, &serving);
        let pos = world.position(now);
        let fix = Fix {
            lat: pos.lat,
            lon: pos.lon,
            speed_mps: pos.speed_mps,
            heading_deg: pos.heading_deg,
        };
        if trace && now.subsec_millis() == 0 {
            let mut line = format!("{}{:5}", if with_policy { "P" } else { "A" }, now.as_secs());
            for (i, c) in cores.iter().enumerate() {
                let s = c.status(now, world);
                line += &format!(
                    " | {:>3} {:>4} {:>6.1} {:>5.1}",
                    s.serving.as_ref().map_or(0, |x| x.pci),
                    s.lock.map_or("-".to_string(), |l| l.1.to_string()),
                    links[i].capacity_bps / 1e6,
                    s.serving.as_ref().map_or(-99.0, |x| x.sinr_db)
                );
            }
            eprintln!("{line}");
        }
        let lap_i = ((now.as_secs_f64() / lap.as_secs_f64()) as usize).min(lap_bits.len() - 1);
        for q in &links {
            lap_bits[lap_i] += q.capacity_bps * dt;
            if q.capacity_bps < link_stall_bps {
                link_stall += dt;
            }
        }
        if links.iter().map(|q| q.capacity_bps).sum::<f64>() < live_bps {
            lap_stall[lap_i] += dt;
        }
        if with_policy {
            let now_us = now.as_micros() as u64;
            feed(&mut towers, Input::Fix { fix });
            for (i, q) in links.iter().enumerate() {
                feed(
                    &mut towers,
                    Input::Link {
                        modem: i,
                        up: q.up,
                        goodput_bps: q.capacity_bps,
                    },
                );
                // Stagger the polls over the interval, as independent modems would be.
                let due = last_poll[i].is_none_or(|t| now >= t + opts.poll);
                let offset = opts.poll.mul_f64(i as f64 / n as f64);
                if !due || now < offset {
                    continue;
                }
                last_poll[i] = Some(now);
                let s = ask(&mut cores[i], "AT+QENG=\"servingcell\"", now, world);
                let nb = ask(&mut cores[i], "AT+QENG=\"neighbourcell\"", now, world);
                let obs = ModemObs {
                    serving: s.serving.as_ref().and_then(CellObs::from_serving),
                    neighbours: nb
                        .neighbours
                        .iter()
                        .filter_map(CellObs::from_neighbour)
                        .collect(),
                };
                feed(
                    &mut towers,
                    Input::Report {
                        at_us: now_us,
                        modem: i,
                        obs,
                    },
                );
            }
            if let Some(d) = feed(&mut towers, Input::Decide { at_us: now_us }) {
                let line = match d.command {
                    Command::Lock { cell, .. } => {
                        format!("AT+QNWLOCK=\"common/4g\",1,{},{}", cell.earfcn, cell.pci)
                    }
                    Command::Release { .. } => "AT+QNWLOCK=\"common/4g\",0".to_string(),
                };
                let r = ask(&mut cores[d.command.modem()], &line, now, world);
                if !r.errors.is_empty() {
                    feed(&mut towers, Input::Failed { command: d.command });
                }
            }
        }
        now += opts.step;
    }
    let laps = opts.laps as f64;
    let lap_goodput: Vec<f64> = lap_bits
        .iter()
        .map(|b| round3(b / lap.as_secs_f64() / 1e6))
        .collect();
    let figures = RunFigures {
        goodput_mbit_s: round3(lap_bits.iter().sum::<f64>() / (lap.as_secs_f64() * laps) / 1e6),
        stall_s: round3(lap_stall.iter().sum()),
        link_stall_s: round3(link_stall),
        switches: towers.policy().switches(),
        cell_changes: cores.iter().map(|c| c.counters().cell_changes).sum(),
        lap_goodput,
        lap_stall_s: lap_stall.iter().map(|s| round3(*s)).collect(),
    };
    let decisions = towers.policy().decisions().map(|d| d.summary()).collect();
    (figures, towers.into_map(), decisions)
}

/// The report for a human.
pub fn render(r: &TrackReport) -> String {
    format!(
        "track '{}': {} laps of {:.0} s, {} modems, {} towers\n\
         policy:     {:.1} Mbit/s, uplink stalled {:.1} s (links {:.0} s), {} switches, laps {:?}\n\
         autonomous: {:.1} Mbit/s, uplink stalled {:.1} s (links {:.0} s), {} cell changes, laps {:?}\n\
         ratio goodput {:.2} (goal ≥ 1.3), ratio stall {:.2} (goal ≤ 0.5), last lap better: {}\n",
        r.scenario,
        r.laps,
        r.lap_s,
        r.modems,
        r.towers,
        r.policy.goodput_mbit_s,
        r.policy.stall_s,
        r.policy.link_stall_s,
        r.policy.switches,
        r.policy.lap_goodput,
        r.autonomous.goodput_mbit_s,
        r.autonomous.stall_s,
        r.autonomous.link_stall_s,
        r.autonomous.cell_changes,
        r.autonomous.lap_goodput,
        r.ratio_goodput,
        r.ratio_stall,
        r.goals.last_lap_better
    )
}
