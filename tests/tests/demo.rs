//! `pitlink demo`, the README's first command: its own broker, simulated sources and three
//! links, and a receiver; every sample it generates must be written exactly once.

use anyhow::{Context, Result};
use std::process::{Command, Stdio};
use system_tests::pitlink_bin;

#[test]
fn demo_delivers_every_sample_exactly_once_and_says_so() -> Result<()> {
    let keep = tempfile::tempdir()?;
    let out = Command::new(pitlink_bin())
        .args(["demo", "--duration", "3s", "--json", "--keep"])
        .arg(keep.path())
        .stdin(Stdio::null())
        .output()
        .context("run pitlink demo")?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "demo failed: {stderr}");
    let s: serde_json::Value = serde_json::from_slice(&out.stdout).with_context(|| {
        format!(
            "demo --json printed: {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })?;
    let n = |k: &str| s[k].as_u64().unwrap_or(u64::MAX);
    // 24,000 samples/s for 3 s: at least two seconds' worth, whatever the machine's load.
    assert!(n("samples_generated") > 48_000, "{s}");
    assert_eq!(n("samples_delivered"), n("samples_generated"), "{s}");
    assert_eq!(
        (
            n("samples_duplicated"),
            n("samples_lost"),
            n("samples_evicted")
        ),
        (0, 0, 0),
        "{s}"
    );
    assert_eq!(n("bad_payloads"), 0, "{s}");
    let links = s["links"].as_array().context("links")?;
    assert_eq!(links.len(), 3, "{s}");
    let acked: u64 = links
        .iter()
        .map(|l| l["batches_acked"].as_u64().unwrap_or(0))
        .sum();
    assert!(acked >= n("batches_delivered"), "{s}");
    // The world's figures are there; each link's emulated radio path carried its batches.
    assert!(
        s["tower_switches"].is_u64() && s["failovers"].is_u64(),
        "{s}"
    );
    for l in links {
        if l["batches_acked"].as_u64().unwrap_or(0) > 0 {
            assert!(l["bytes"].as_u64().unwrap_or(0) > 0, "{l}");
        }
    }
    // Columnar bodies: well under the 8 bytes of a bare f64 per sample.
    let wire = s["wire_bytes_per_sample"].as_f64().context("wire bytes")?;
    assert!(wire > 0.0 && wire < 8.0, "{wire} wire bytes per sample");
    // The human summary goes to stderr with --json, and names the same figures.
    assert!(stderr.contains("samples lost       0"), "{stderr}");
    // --keep keeps what the receiver wrote.
    let written = std::fs::read_dir(keep.path())?.count();
    assert!(written > 0, "nothing kept in {}", keep.path().display());
    Ok(())
}

/// The README's first command as a user runs it: within its first minute the scripted link
/// failure and at least one tower switch happen, and still nothing is lost or duplicated.
#[test]
fn the_default_one_minute_demo_fails_a_link_switches_a_tower_and_loses_nothing() -> Result<()> {
    let out = Command::new(pitlink_bin())
        .args(["demo", "--json"])
        .stdin(Stdio::null())
        .output()
        .context("run pitlink demo")?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "demo failed: {stderr}");
    let s: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let n = |k: &str| s[k].as_u64().unwrap_or(u64::MAX);
    assert!(s["duration_s"].as_f64().unwrap_or(0.0) >= 60.0, "{s}");
    assert!(n("failovers") >= 1, "{s}");
    assert!(n("tower_switches") >= 1, "{s}");
    assert_eq!(n("samples_delivered"), n("samples_generated"), "{s}");
    assert_eq!(
        (
            n("samples_duplicated"),
            n("samples_lost"),
            n("samples_evicted")
        ),
        (0, 0, 0),
        "{s}"
    );
    // The live view went to stderr and told the story.
    assert!(stderr.contains("blackholed (scripted failure)"), "{stderr}");
    assert!(stderr.contains("tower: modem"), "{stderr}");
    Ok(())
}
