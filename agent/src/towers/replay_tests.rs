//! Replay: a track run's recorded inputs are read back and fed to fresh tower logic, which
//! must decide exactly as the run did; every decision is then checked against the rules from
//! the recorded inputs alone (an oracle independent of the policy's code).

use std::collections::HashMap;

use super::policy::{Command, Decision, ModemObs};
use super::{Input, Towers};
use crate::bench::track::{TrackOptions, track};
use crate::towers::map::CellMap;

#[test]
fn a_recorded_run_replays_to_the_same_decisions_and_every_decision_follows_the_rules() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("track.jsonl");
    let opts = TrackOptions {
        laps: 2,
        record: Some(path.clone()),
        ..Default::default()
    };
    let report = track(&opts).expect("track run");
    let inputs: Vec<Input> = std::fs::read_to_string(&path)
        .expect("recording")
        .lines()
        .map(|l| serde_json::from_str(l).expect("an input"))
        .collect();
    assert!(inputs.len() > 1000, "{} inputs", inputs.len());

    // Replay.
    let cfg = opts.policy.clone();
    let modems = report.modems;
    let mut towers = Towers::new(cfg.clone(), modems, CellMap::new(50_000));
    let mut decisions: Vec<Decision> = Vec::new();
    // What the oracle sees: per modem its reports, last goodput, lock state.
    let mut reports: Vec<Vec<(u64, ModemObs)>> = vec![Vec::new(); modems];
    let mut goodput = vec![(false, 0.0); modems];
    let mut locked = vec![false; modems];
    let us = |d: std::time::Duration| d.as_micros() as u64;
    for input in &inputs {
        match input {
            Input::Report { at_us, modem, obs } => reports[*modem].push((*at_us, obs.clone())),
            Input::Link {
                modem,
                up,
                goodput_bps,
            } => goodput[*modem] = (*up, *goodput_bps),
            _ => {}
        }
        let Some(d) = towers.apply(input) else {
            continue;
        };
        let m = d.command.modem();
        let t = d.at_us;
        // One modem re-attaching at a time.
        if let Some(prev) = decisions.last() {
            assert!(t - prev.at_us >= us(cfg.reattach), "{prev:?} then {d:?}");
        }
        match d.command {
            Command::Lock { cell, .. } => {
                // Dwell since this modem's previous decision.
                if let Some(prev) = decisions.iter().rev().find(|p| p.command.modem() == m) {
                    assert!(t - prev.at_us >= us(cfg.min_dwell), "{prev:?} then {d:?}");
                }
                // Never the modem carrying the best link while the others are worse.
                let (up, g) = goodput[m];
                let others_worse = goodput
                    .iter()
                    .enumerate()
                    .all(|(i, (u, og))| i == m || !u || *og < g);
                assert!(
                    !(up && others_worse),
                    "{d:?} touched the best link {goodput:?}"
                );
                // The target is heard now, strongly enough to lock.
                let last = &reports[m].last().expect("reports before a decision").1;
                let now = last
                    .neighbours
                    .iter()
                    .find(|n| n.cell == cell)
                    .unwrap_or_else(|| panic!("{d:?}: target not among the neighbours"));
                assert!(now.rsrp_dbm >= cfg.min_lock_rsrp_dbm, "{d:?}");
                if d.reason.contains("beats serving") {
                    // Hysteresis held over the whole time-to-trigger (the diversity penalty may
                    // take up to its value off each margin).
                    let slack = cfg.diversity_penalty_db;
                    let window: Vec<_> = reports[m]
                        .iter()
                        .filter(|(at, _)| *at + us(cfg.time_to_trigger) >= t && *at <= t)
                        .collect();
                    assert!(
                        window.len() >= 4,
                        "{d:?}: {} reports in the window",
                        window.len()
                    );
                    for (at, o) in window {
                        let s = o.serving.expect("serving during the window");
                        let n = o
                            .neighbours
                            .iter()
                            .find(|n| n.cell == cell)
                            .unwrap_or_else(|| panic!("{d:?}: target missing at {at}"));
                        assert!(
                            n.rsrp_dbm - s.rsrp_dbm >= cfg.rsrp_margin_db,
                            "{d:?} at {at}"
                        );
                        let (ns, ss) = (n.sinr_db.expect("sinr"), s.sinr_db.expect("sinr"));
                        assert!(ns - ss + slack >= cfg.sinr_margin_db, "{d:?} at {at}");
                    }
                } else if d.reason.starts_with("diversity") {
                    let s = last.serving.expect("serving").cell;
                    assert!(
                        reports[..m].iter().any(|r| r
                            .last()
                            .and_then(|x| x.1.serving)
                            .is_some_and(|x| x.cell == s)),
                        "{d:?}: the serving cell was not shared with a lower modem"
                    );
                } else {
                    assert!(d.reason.starts_with("predictive"), "{d:?}: unknown reason");
                }
                locked[m] = true;
            }
            Command::Release { .. } => {
                assert!(locked[m], "{d:?}: released a modem that was not locked");
                locked[m] = false;
            }
        }
        decisions.push(d);
    }
    // The replay decided exactly what the run decided.
    assert_eq!(decisions.len() as u64, report.policy.switches);
    let tail: Vec<String> = decisions
        .iter()
        .rev()
        .take(report.last_decisions.len())
        .rev()
        .map(|d| d.summary())
        .collect();
    assert_eq!(tail, report.last_decisions);
    assert!(!decisions.is_empty(), "two laps without a single decision");
    let kinds: HashMap<&str, usize> = decisions.iter().fold(HashMap::new(), |mut h, d| {
        *h.entry(d.reason.split([':', ' ']).next().unwrap_or(""))
            .or_default() += 1;
        h
    });
    eprintln!("replayed {} decisions: {kinds:?}", decisions.len());
}
