//! The chaos suite, short variant: `pitlink bench chaos` for two and a half minutes against the
//! real agent, a real Mosquitto and the simulated track (1 kHz × 300 synthetic channels, the
//! RAV4 capture replayed with malformed lines, GPS and a line sensor), with kills, torn queue
//! tails, a broker restart, link blackholes / resets / flaps, a disk-full episode (root: CI
//! runs as root), malformed input on every source, the modems and the topic, and a SIGHUP
//! reload. Its oracle must find nothing lost without a report and no duplicate; this test also
//! re-reads the receiver's CSV output on its own for duplicates and counts.
//!
//! The seed comes from the clock and is printed; `PITLINK_CHAOS_SEED=<n>` replays it.

use anyhow::{Context, Result, ensure};
use serde_json::Value;
use std::path::Path;
use std::process::{Command, Stdio};
use system_tests::*;

const MINUTES: &str = "2.5";

fn u(v: &Value, k: &str) -> u64 {
    v[k].as_u64()
        .unwrap_or_else(|| panic!("no number {k} in {v}"))
}

/// Rows and repeated timestamps over every channel file of `<csv>/<vehicle>/<source>/`.
fn recount(vehicle_dir: &Path) -> Result<(u64, u64)> {
    let (mut rows, mut dups) = (0, 0);
    for s in std::fs::read_dir(vehicle_dir)?.flatten() {
        if !s.path().is_dir() {
            continue;
        }
        for f in std::fs::read_dir(s.path())?.flatten() {
            let text = std::fs::read_to_string(f.path())?;
            let mut ts: Vec<u64> = Vec::new();
            for line in text.lines().skip(1) {
                let t = line.split(',').next().unwrap_or_default();
                ts.push(
                    t.parse()
                        .with_context(|| format!("{}: {line}", f.path().display()))?,
                );
            }
            ts.sort_unstable();
            rows += ts.len() as u64;
            dups += ts.windows(2).filter(|w| w[0] == w[1]).count() as u64;
        }
    }
    Ok((rows, dups))
}

#[test]
fn chaos_short_run_loses_nothing_unreported_and_duplicates_nothing() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let work = dir.path().join("chaos");
    let seed = match std::env::var("PITLINK_CHAOS_SEED") {
        Ok(s) => s.trim().parse::<u64>().context("PITLINK_CHAOS_SEED")?,
        Err(_) => pitlink::bench::crash::clock_seed(),
    };
    println!("chaos: seed {seed} (replay: PITLINK_CHAOS_SEED={seed})");
    let out = Command::new(pitlink_bin())
        .args(["bench", "chaos", "--json", "--minutes", MINUTES, "--seed"])
        .arg(seed.to_string())
        .arg("--dir")
        .arg(&work)
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .context("run pitlink bench chaos")?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    ensure!(
        out.status.success(),
        "bench chaos failed ({}): {stdout}",
        out.status
    );
    let r: Value = serde_json::from_str(stdout.lines().last().context("no JSON line")?)
        .with_context(|| format!("not JSON: {stdout}"))?;
    println!("{r}");

    // The goals.
    assert_eq!(u(&r, "lost_unaccounted"), 0, "holes: {}", r["holes"]);
    assert_eq!(u(&r, "duplicates_after_dedup"), 0);
    // The run was what it says: every kind of fault, a real volume of data.
    assert!(u(&r, "kills") >= 3, "{r}");
    let kinds = r["faults_by_kind"].as_object().context("faults_by_kind")?;
    let root = nix::unistd::Uid::effective().is_root();
    for (k, n) in kinds {
        if k == "disk_full" && !root {
            continue;
        }
        assert!(n.as_u64() >= Some(1), "no {k} fault: {r}");
    }
    let minutes: f64 = MINUTES.parse()?;
    assert!(
        u(&r, "samples") as f64 > 300.0 * 1000.0 * 60.0 * minutes * 0.5,
        "at least half of 1 kHz × 300 channels over the run arrived: {r}"
    );
    for s in ["engine", "chassis", "suspension", "gps", "oil", "can0"] {
        assert!(
            r["samples_by_source"][s].as_u64() > Some(0),
            "nothing from {s}: {r}"
        );
    }
    // Malformed input was seen, counted and survived, on every source that reads any.
    for s in ["gps", "oil", "can0"] {
        assert!(
            r["malformed_by_source"][s].as_u64() > Some(0),
            "{s} counted no malformed input: {r}"
        );
    }
    assert!(u(&r, "bad_payloads") >= 1, "{r}");
    // The agent's side agrees; nothing crashed by itself; the end was clean.
    assert_eq!(r["sender_receiver_agree"], true, "{}", r["disagreements"]);
    assert_eq!(u(&r, "panics"), 0);
    assert_eq!(u(&r, "unexpected_exits"), 0);
    assert_eq!(r["clean_stop"], true);
    assert_eq!(u(&r, "unannounced_runs"), 0);
    assert_eq!(u(&r, "wrong_values"), 0);
    assert!(
        u(&r, "runs") > u(&r, "kills"),
        "a run per start and reload: {r}"
    );
    let rss = r["rss_mib_max"].as_f64().context("rss_mib_max")?;
    assert!(rss > 1.0 && rss < 256.0, "agent RSS peak {rss} MiB");

    // The receiver's output, counted here independently of the bench's oracle.
    let (rows, dups) = recount(&work.join("csv").join("chaos-car"))?;
    assert_eq!(rows, u(&r, "samples"), "rows counted here and by the bench");
    assert_eq!(dups, 0, "a timestamp twice in a channel file");
    Ok(())
}
