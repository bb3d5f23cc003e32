//! `pitlink towers`: the tower policy's view, for a human.

use std::fmt::Write;

use super::Status;

/// One screen: policy state, each modem's serving and locked cell with its radio, the map,
/// the last decisions with their reasons.
pub fn render(s: &Status) -> String {
    let t = &s.towers;
    let mut o = String::new();
    if t.modems.is_empty() {
        o.push_str(
            "no link has a modem: set modem = \"/dev/...\" or modemmanager = \"first\" in a [[links]] table\n",
        );
        return o;
    }
    let _ = writeln!(
        o,
        "tower policy {}   {} switches ({} failed)   map {} entries over {} squares of 50 m{}",
        if t.policy {
            "on"
        } else {
            "off (modems only read)"
        },
        t.switches,
        t.failures,
        t.map_entries,
        t.map_squares,
        t.map_file
            .as_ref()
            .map(|p| format!(" ({})", p.display()))
            .unwrap_or_default()
    );
    match &t.position {
        Some(f) => {
            let _ = writeln!(
                o,
                "position {:.5}, {:.5}   {:.0} km/h   heading {:.0}°",
                f.lat,
                f.lon,
                f.speed_mps * 3.6,
                f.heading_deg
            );
        }
        None => o.push_str("position unknown (no NMEA source with a fix)\n"),
    }
    let _ = writeln!(
        o,
        "\n  {:<10} {:<12} {:<12} {:>6} {:>6} {:>6}  {:<9} note",
        "link", "serving", "locked", "RSRP", "RSRQ", "SINR", "quality"
    );
    for m in &t.modems {
        let radio = s
            .links
            .iter()
            .find(|l| l.name == m.link)
            .and_then(|l| l.radio.as_ref());
        let num = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.0}"));
        let _ = writeln!(
            o,
            "  {:<10} {:<12} {:<12} {:>6} {:>6} {:>6}  {:<9} {}",
            m.link,
            m.serving.map_or("-".into(), |c| c.to_string()),
            m.locked.map_or("-".into(), |c| c.to_string()),
            num(radio.and_then(|r| r.rsrp_dbm)),
            num(radio.and_then(|r| r.rsrq_db)),
            num(radio.and_then(|r| r.sinr_db)),
            radio
                .and_then(|r| r.quality)
                .map_or("-".into(), |q| format!("{q:?}").to_lowercase()),
            if !m.lockable {
                "cannot lock".to_string()
            } else {
                radio.and_then(|r| r.error.clone()).unwrap_or_default()
            }
        );
    }
    if t.decisions.is_empty() {
        o.push_str("\nno decisions yet\n");
    } else {
        o.push_str("\nlast decisions\n");
        for d in t.decisions.iter().rev().take(10) {
            let ago = s.now_us.saturating_sub(d.at_us) as f64 / 1e6;
            let link = s
                .links
                .get(d.command.modem())
                .map_or("?", |l| l.name.as_str());
            let what = match d.command {
                crate::towers::policy::Command::Lock { cell, .. } => format!("lock {cell}"),
                crate::towers::policy::Command::Release { .. } => "release".into(),
            };
            let _ = writeln!(o, "  {ago:>6.0} s ago  {link:<10} {what:<14} {}", d.reason);
        }
    }
    o
}
