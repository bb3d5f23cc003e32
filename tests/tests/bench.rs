//! The benchmarks as a user runs them: the real binary, real child processes, real SIGKILLs.
//! Figures are checked for presence and sanity, never against timings.

use anyhow::{Context, Result, ensure};
use serde_json::Value;
use std::process::Command;
use system_tests::pitlink_bin;

/// Runs `pitlink bench ARGS --json` and parses the one JSON object it prints.
fn bench_json(args: &[&str]) -> Result<Value> {
    let out = Command::new(pitlink_bin())
        .arg("bench")
        .args(args)
        .arg("--json")
        .output()
        .context("run pitlink bench")?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    ensure!(
        out.status.success(),
        "pitlink bench {args:?}: {}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(stdout.trim()).with_context(|| format!("one JSON object: {stdout}"))
}

fn u(v: &Value, k: &str) -> u64 {
    v.get(k)
        .and_then(Value::as_u64)
        .unwrap_or_else(|| panic!("{k}: a non-negative integer in {v}"))
}

fn f(v: &Value, k: &str) -> f64 {
    v.get(k)
        .and_then(Value::as_f64)
        .unwrap_or_else(|| panic!("{k}: a number in {v}"))
}

#[test]
fn crash_loop_of_10_kills_loses_and_duplicates_nothing() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let dir_s = dir.path().to_str().context("utf-8 path")?;
    let r = bench_json(&["crash", "--kills", "10", "--dir", dir_s])?;
    assert_eq!(u(&r, "crash_kills"), 10, "{r}");
    assert_eq!(u(&r, "crash_lost_durable"), 0, "{r}");
    assert_eq!(u(&r, "crash_duplicates_after_dedup"), 0, "{r}");
    assert_eq!(u(&r, "crash_corrupt_payloads"), 0, "{r}");
    assert_eq!(u(&r, "crash_content_mismatches"), 0, "{r}");
    assert_eq!(u(&r, "crash_durable_end_short"), 0, "{r}");
    assert_eq!(u(&r, "crash_lost_unaccounted"), 0, "{r}");
    assert!(u(&r, "batches_recovered") > 0, "{r}");
    assert!(
        u(&r, "batches_recovered") >= u(&r, "batches_appended") - u(&r, "crash_lost_before_fsync"),
        "every reported append is recovered or in the fsync window: {r}"
    );
    assert_eq!(u(&r, "flush_ms"), 100);
    assert!(f(&r, "crash_lost_before_fsync_max_ms") >= 0.0);
    assert!(f(&r, "elapsed_s") > 0.0);
    u(&r, "seed");
    // The scratch directory is removed at the end.
    assert_eq!(std::fs::read_dir(dir.path())?.count(), 0);
    Ok(())
}

#[test]
fn queue_bench_reports_every_field() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let dir_s = dir.path().to_str().context("utf-8 path")?;
    let r = bench_json(&[
        "queue",
        "--mib",
        "32",
        "--recovery-mib",
        "64",
        "--dir",
        dir_s,
    ])?;
    for k in ["append_mib_s", "disk_baseline_mib_s", "ratio_to_disk"] {
        assert!(f(&r, k) > 0.0, "{k} in {r}");
    }
    assert!((f(&r, "payload_mib") - 32.0).abs() < 0.1, "{r}");
    for k in ["write_amplification", "baseline_write_amplification"] {
        match r.get(k) {
            Some(Value::Null) => {} // not counted here (tmpfs)
            Some(v) => {
                let wa = v.as_f64().context("a number")?;
                assert!((0.5..=3.0).contains(&wa), "{k} = {wa} in {r}");
            }
            None => panic!("{k} missing in {r}"),
        }
    }
    for k in [
        "sled_append_mib_s",
        "sled_payload_mib",
        "sled_write_amplification",
        "sled_ratio_to_disk",
    ] {
        match r.get(k) {
            Some(Value::Null) => {}
            Some(v) => assert!(v.as_f64().is_some_and(|x| x > 0.0), "{k} in {r}"),
            None => panic!("{k} missing in {r}"),
        }
    }
    assert!(r.get("sled_note").and_then(Value::as_str).is_some(), "{r}");
    assert!(f(&r, "recovery_ms") > 0.0, "{r}");
    assert!(
        f(&r, "recovery_mib") >= 64.0,
        "the writer was killed past 64 MiB: {r}"
    );
    assert!(
        u(&r, "recovered_batches") >= 64 * 64,
        "64 MiB of 16 KiB records at least: {r}"
    );
    assert_eq!(u(&r, "recovery_corrupt_records"), 0, "{r}");
    u(&r, "recovery_truncated_bytes");
    assert_eq!(std::fs::read_dir(dir.path())?.count(), 0);
    Ok(())
}

#[test]
fn ingest_bench_queues_every_frame_its_source_hands_over() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let dir_s = dir.path().to_str().context("utf-8 path")?;
    let r = bench_json(&[
        "ingest",
        "--flat-out",
        "1s",
        "--paced",
        "1s",
        "--rate",
        "20000",
        "--dir",
        dir_s,
    ])?;
    assert_eq!(u(&r, "log_frames"), 8977, "the RAV4 capture: {r}");
    assert!(u(&r, "flat_out_frames") > 0, "{r}");
    assert_eq!(
        u(&r, "flat_out_frames"),
        u(&r, "flat_out_source_frames"),
        "{r}"
    );
    assert_eq!(u(&r, "paced_frames"), u(&r, "paced_source_frames"), "{r}");
    assert_eq!(u(&r, "paced_rate"), 20_000);
    u(&r, "dropped_frames");
    for k in [
        "parse_frames_per_s",
        "max_frames_per_s",
        "ratio_to_parse",
        "cpu_fraction_at_160k",
        "rss_mib_at_160k",
        "paced_achieved_frames_per_s",
        "queue_bytes_per_frame",
    ] {
        assert!(f(&r, k) > 0.0, "{k} in {r}");
    }
    // The scratch queues are removed at the end.
    assert_eq!(std::fs::read_dir(dir.path())?.count(), 0);
    Ok(())
}

#[test]
fn track_reports_both_runs_deterministically_and_takes_a_scenario_file() -> Result<()> {
    let r = bench_json(&["track", "--laps", "2"])?;
    for run in ["policy", "autonomous"] {
        let v = &r[run];
        assert!(f(v, "goodput_mbit_s") > 0.0, "{r}");
        assert!(
            f(v, "stall_s") >= 0.0 && f(v, "link_stall_s") >= f(v, "stall_s"),
            "{r}"
        );
        let laps = v["lap_goodput"].as_array().context("lap_goodput")?;
        assert_eq!(laps.len(), 2, "{r}");
        let mean = laps.iter().filter_map(Value::as_f64).sum::<f64>() / 2.0;
        assert!((mean - f(v, "goodput_mbit_s")).abs() < 0.01, "{r}");
    }
    assert_eq!(u(&r["autonomous"], "switches"), 0, "the modems alone: {r}");
    assert!(u(&r["policy"], "switches") > 0, "{r}");
    let ratio = f(&r["policy"], "goodput_mbit_s") / f(&r["autonomous"], "goodput_mbit_s");
    assert!((ratio - f(&r, "ratio_goodput")).abs() < 0.01, "{r}");
    assert_eq!(u(&r, "modems"), 3);
    assert!(u(&r, "towers") >= 6 && u(&r, "map_entries") > 0, "{r}");
    for g in [
        "ratio_goodput_ge_1_3",
        "ratio_stall_le_0_5",
        "last_lap_better",
    ] {
        assert!(r["goals"][g].is_boolean(), "{g}: {r}");
    }
    // Deterministic: the same figures again.
    let again = bench_json(&["track", "--laps", "2"])?;
    assert_eq!(again["policy"], r["policy"]);
    assert_eq!(again["autonomous"], r["autonomous"]);

    // Another scenario file: one carrier, the shipped towers of that carrier only.
    let dir = tempfile::tempdir()?;
    let ring = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../modem-hal/scenarios/ring.toml"),
    )?;
    let one = ring
        .replace("name = \"pitlink ring\"", "name = \"one carrier\"")
        .replace(
            "carrier = \"Beta Telecom\"\n\n[[modem]]",
            "carrier = \"Alpha Mobile\"\n\n[[modem]]",
        );
    let path = dir.path().join("one.toml");
    std::fs::write(&path, one)?;
    let o = bench_json(&[
        "track",
        "--laps",
        "1",
        "--scenario",
        path.to_str().context("utf-8")?,
    ])?;
    assert_eq!(o["scenario"], "one carrier", "{o}");
    // A broken file is an error naming it.
    std::fs::write(&path, "name = 3")?;
    let out = Command::new(pitlink_bin())
        .args(["bench", "track", "--scenario"])
        .arg(&path)
        .output()?;
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("one.toml:1"), "{err}");
    Ok(())
}

/// Short variants of the bonded uplink's benchmarks: every field present, and the invariants
/// (nothing lost, nothing duplicated) hold. Timings are reported, never checked.
#[test]
fn failover_bench_short_loses_and_duplicates_nothing() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let dir_s = dir.path().to_str().context("utf-8 path")?;
    let r = bench_json(&[
        "failover",
        "--blackholes",
        "3",
        "--hold",
        "1s",
        "--gap",
        "1s",
        "--channels",
        "20",
        "--dir",
        dir_s,
    ])?;
    assert_eq!(u(&r, "blackholes"), 3, "{r}");
    assert_eq!(u(&r, "lost_batches"), 0, "{r}");
    assert_eq!(u(&r, "duplicates_delivered_after_dedup"), 0, "{r}");
    assert_eq!(u(&r, "partial_batches"), 0, "{r}");
    assert!(u(&r, "data_batches") > 0, "{r}");
    assert_eq!(
        u(&r, "samples_written"),
        u(&r, "samples_generated"),
        "every sample written exactly once: {r}"
    );
    assert!(
        f(&r, "failover_ms_p50") >= 0.0 && f(&r, "failover_ms_max") >= 0.0,
        "{r}"
    );
    for k in [
        "batches_moved",
        "duplicate_acks",
        "duplicate_batches_dropped",
        "affected_batches",
    ] {
        u(&r, k);
    }
    assert!(r["goals_met"].is_boolean(), "{r}");
    let holes = r["per_blackhole"].as_array().context("per_blackhole")?;
    assert_eq!(holes.len(), 3, "{r}");
    for h in holes {
        assert_eq!(u(h, "never_acked"), 0, "{r}");
    }
    assert_eq!(r["links"].as_array().map(Vec::len), Some(3), "{r}");
    assert_eq!(std::fs::read_dir(dir.path())?.count(), 0, "scratch removed");
    Ok(())
}

#[test]
fn bond_bench_short_reports_goodput_efficiency_and_shares() -> Result<()> {
    let r = bench_json(&[
        "bond",
        "--links",
        "2:30,5:60",
        "--duration",
        "4s",
        "--warmup",
        "2s",
    ])?;
    assert_eq!(f(&r, "capacity_sum_mbit_s"), 7.0, "{r}");
    let g = f(&r, "goodput_mbit_s");
    assert!(g > 0.0, "{r}");
    let e = f(&r, "efficiency");
    assert!(
        (e - g / 7.0).abs() < 0.01,
        "efficiency = goodput / capacity: {r}"
    );
    assert!(f(&r, "offered_mbit_s") > 0.0, "{r}");
    let links = r["links"].as_array().context("links")?;
    assert_eq!(links.len(), 2, "{r}");
    let shares: f64 = links.iter().map(|l| f(l, "share")).sum();
    assert!((shares - 1.0).abs() < 0.01, "shares add up: {r}");
    assert_eq!(f(&links[1], "rtt_ms"), 60.0, "{r}");
    let base = &r["baseline_single_link"];
    assert_eq!(
        f(base, "capacity_sum_mbit_s"),
        5.0,
        "the fastest link alone: {r}"
    );
    assert!(r["goal_met"].is_boolean(), "{r}");
    // A bad link list is named.
    let out = Command::new(pitlink_bin())
        .args(["bench", "bond", "--links", "2:30,fast"])
        .output()?;
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("'fast'"), "{err}");
    Ok(())
}

#[test]
fn live_bench_short_drains_the_backlog_and_delivers_everything_once() -> Result<()> {
    let r = bench_json(&[
        "live",
        "--backlog",
        "20s",
        "--tail",
        "2s",
        "--channels",
        "10",
    ])?;
    assert!(u(&r, "backlog_batches") > 0, "{r}");
    assert!(f(&r, "backlog_drain_s") > 0.0, "drained: {r}");
    assert_eq!(u(&r, "lost_batches"), 0, "{r}");
    assert_eq!(u(&r, "duplicates_delivered_after_dedup"), 0, "{r}");
    assert!(u(&r, "live_batches") > 0, "{r}");
    assert!(f(&r, "live_latency_ms_p50") >= 0.0, "{r}");
    assert!(
        f(&r, "live_latency_ms_p99") >= f(&r, "live_latency_ms_p50"),
        "{r}"
    );
    assert_eq!(u(&r, "batch_window_ms"), 100, "{r}");
    assert_eq!(f(&r, "rtt_ms"), 60.0, "{r}");
    assert_eq!(f(&r, "goal_p99_ms"), 100.0 + 2.0 * 60.0 + 50.0, "{r}");
    assert!(r["goal_met"].is_boolean(), "{r}");
    Ok(())
}

#[test]
fn footprint_measures_a_real_daemon_idle_and_loaded() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let dir_s = dir.path().to_str().context("utf-8 path")?;
    // Binary sizes given explicitly: this test binary stands in for both builds.
    let me = std::env::current_exe()?;
    let me_s = me.to_str().context("utf-8 path")?;
    let r = bench_json(&[
        "footprint",
        "--rate",
        "5000",
        "--idle",
        "1s",
        "--loaded",
        "2s",
        "--settle",
        "500ms",
        "--amd64",
        me_s,
        "--arm64",
        me_s,
        "--dir",
        dir_s,
    ])?;
    let size = std::fs::metadata(&me)?.len();
    assert_eq!(u(&r, "binary_bytes_amd64"), size, "{r}");
    assert_eq!(u(&r, "binary_bytes_arm64"), size, "{r}");
    assert_eq!(u(&r, "rate"), 5000, "{r}");
    for k in [
        "rss_mib_idle",
        "rss_mib_at_160k",
        "achieved_frames_per_s",
        "cpu_fraction_at_160k",
    ] {
        assert!(f(&r, k) > 0.0, "{k} in {r}");
    }
    assert!(f(&r, "cpu_fraction_idle") >= 0.0, "{r}");
    // Batches went through the link to the broker, not only into the queue.
    assert!(u(&r, "appended_batches") > 0, "{r}");
    assert!(u(&r, "delivered_batches") > 0, "{r}");
    assert_eq!(std::fs::read_dir(dir.path())?.count(), 0, "scratch removed");
    Ok(())
}
