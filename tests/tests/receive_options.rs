//! `pitlink receive` refuses unusable options before it connects: the error names the file, the
//! line where there is one, and the fix.

use anyhow::{Context, Result};
use system_tests::*;

/// Runs `pitlink receive` against a broker that does not exist: it must fail on its own options
/// first (were it to get as far as connecting, it would retry for ever and the test time out).
fn receive_err(args: &[&str]) -> Result<String> {
    let mut all = vec![
        "receive",
        "--broker",
        "unix:/nonexistent/mqtt.sock",
        "--duration",
        "20s",
    ];
    all.extend_from_slice(args);
    let res = std::process::Command::new(pitlink_bin())
        .args(&all)
        .output()?;
    assert!(!res.status.success(), "should have failed: {all:?}");
    Ok(String::from_utf8_lossy(&res.stderr).into_owned())
}

#[test]
fn a_state_file_from_a_newer_version_is_refused_with_the_fix() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let out = dir.path().join("o.jsonl");
    let state = dir.path().join("o.jsonl.state");
    std::fs::write(&state, b"PLRXSTAT\xff\0\0\0\0\0\0\0")?;
    let err = receive_err(&["--out", out.to_str().context("utf-8")?])?;
    assert!(err.contains(&state.display().to_string()), "{err}");
    assert!(err.contains("newer than this pitlink"), "{err}");
    Ok(())
}

#[test]
fn a_bad_dbc_is_refused_with_its_file_and_line() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let dbc = dir.path().join("car.dbc");
    std::fs::write(&dbc, "VERSION \"\"\n\nBO_ 12 X: 8 ECU\n SG_ broken\n")?;
    let spec = format!("can0={}", dbc.display());
    let err = receive_err(&["--dbc", &spec])?;
    assert!(err.contains(&format!("--dbc {spec}")), "{err}");
    assert!(err.contains(&format!("{}:", dbc.display())), "{err}");
    assert!(err.contains("leave out this --dbc"), "{err}");
    let err = receive_err(&["--dbc", "car.dbc"])?;
    assert!(err.contains("expected BUS=FILE"), "{err}");
    Ok(())
}
