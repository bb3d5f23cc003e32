//! Human-readable status: one screen, the facts an engineer checks first.

use super::Status;
use std::fmt::Write;

fn mib(b: u64) -> f64 {
    b as f64 / (1024.0 * 1024.0)
}

fn age(now_us: u64, then_us: Option<u64>) -> String {
    match then_us {
        Some(t) if t > 0 => format!("{:.1} s", now_us.saturating_sub(t) as f64 / 1e6),
        _ => "-".into(),
    }
}

pub fn render(s: &Status) -> String {
    let mut o = String::new();
    let up = s.now_us.saturating_sub(s.started_us) as f64 / 1e6;
    let _ = writeln!(
        o,
        "vehicle {}   pitlink {}   pid {}   up {:.0} s   run {}",
        s.vehicle, s.version, s.pid, up, s.queue.stats.run
    );
    o.push('\n');
    o.push_str(&render_sources(s));
    o.push('\n');
    o.push_str(&render_queue(s));
    let _ = writeln!(o, "\nLINKS");
    let _ = writeln!(
        o,
        "  {:<10} {:<10} {:<7} {:>8} {:>12} {:>9} {:>9} {:>9} {:>7} {:>6}  {:<14} last error",
        "name",
        "interface",
        "state",
        "RTT ms",
        "goodput",
        "in flight",
        "sent",
        "acked",
        "moved",
        "downs",
        "radio"
    );
    for l in &s.links {
        let radio =
            l.radio
                .as_ref()
                .map_or("-".to_string(), |r| match (r.pci, r.rsrp_dbm, r.sinr_db) {
                    (Some(pci), Some(rsrp), sinr) => format!(
                        "{pci} {rsrp:.0}/{}",
                        sinr.map_or("-".to_string(), |v| format!("{v:.0}"))
                    ),
                    _ => "no service".to_string(),
                });
        let _ = writeln!(
            o,
            "  {:<10} {:<10} {:<7} {:>8} {:>12} {:>9} {:>9} {:>9} {:>7} {:>6}  {:<14} {}",
            l.name,
            l.interface.as_deref().unwrap_or("-"),
            l.state,
            l.metrics
                .srtt_ms
                .map_or("-".to_string(), |v| format!("{v:.0}")),
            l.metrics
                .goodput_bytes_s
                .map_or("-".to_string(), |g| format!("{:.1} Mbit/s", g * 8.0 / 1e6)),
            l.in_flight,
            l.counters.sent,
            l.counters.acked,
            l.counters.moved,
            l.counters.downs,
            radio,
            l.last_error.as_deref().unwrap_or("-")
        );
    }
    if !s.towers.decisions.is_empty() {
        let _ = writeln!(o, "\nTOWERS  {} switches", s.towers.switches);
        for d in s.towers.decisions.iter().rev().take(3) {
            let link = s
                .links
                .get(d.command.modem())
                .map_or("?", |l| l.name.as_str());
            let _ = writeln!(
                o,
                "  {:>6.0} s ago  {link}: {}",
                s.now_us.saturating_sub(d.at_us) as f64 / 1e6,
                d.reason
            );
        }
    }
    o
}

/// The SOURCES section (`pitlink sources`).
pub fn render_sources(s: &Status) -> String {
    let mut o = String::new();
    let _ = writeln!(o, "SOURCES");
    let _ = writeln!(
        o,
        "  {:<16} {:<10} {:<24} {:>4} {:>12} {:>10} {:>8} {:>8} {:>8} {:>6} {:>8}",
        "name",
        "kind",
        "device",
        "up",
        "readings",
        "per s",
        "dropped",
        "overrun",
        "bad",
        "reconn",
        "errfrm"
    );
    for src in &s.sources {
        let c = &src.counters;
        let _ = writeln!(
            o,
            "  {:<16} {:<10} {:<24} {:>4} {:>12} {:>10.0} {:>8} {:>8} {:>8} {:>6} {:>8}",
            src.name,
            src.kind,
            src.device,
            if c.connected { "yes" } else { "NO" },
            c.readings,
            src.readings_per_s,
            c.drops,
            c.overruns,
            c.parse_errors,
            c.reconnects,
            c.error_frames
        );
        if !c.error_classes.is_empty() {
            let classes: Vec<String> = c
                .error_classes
                .iter()
                .map(|(k, n)| format!("{k} {n}"))
                .collect();
            let _ = writeln!(o, "  {:<16} error frames: {}", "", classes.join(", "));
        }
        if let Some(e) = &c.last_error {
            let _ = writeln!(o, "  {:<16} last error: {e}", "");
        }
    }
    o
}

/// The QUEUE section (`pitlink queue`).
pub fn render_queue(s: &Status) -> String {
    let mut o = String::new();
    let q = &s.queue.stats;
    let _ = writeln!(o, "QUEUE  {}", s.queue.dir.display());
    let _ = writeln!(
        o,
        "  undelivered {} batches ({} live waiting), backlog since {}   disk {:.1} / {:.0} MiB in {} segments",
        q.undelivered,
        s.queue.unsent,
        age(s.now_us, q.oldest_undelivered_us),
        mib(q.bytes_on_disk),
        mib(q.cap_bytes),
        q.segments
    );
    let _ = writeln!(
        o,
        "  appended {}  delivered {}  evicted {} ({} samples)  dropped {} ({} samples, {} write errors)  damaged {}",
        q.appended_batches,
        q.delivered_batches,
        q.evicted_batches,
        q.evicted_samples,
        q.dropped_batches,
        q.dropped_samples,
        q.write_errors,
        q.damaged_batches
    );
    let _ = writeln!(
        o,
        "  run {}  durable up to seq {}  group commits {} ({} failed)  notices pending {}",
        q.run,
        q.durable_seq.map_or("-".to_string(), |d| d.to_string()),
        q.syncs,
        q.sync_errors,
        q.pending_notices
    );
    let r = &s.queue.recovery;
    let _ = writeln!(
        o,
        "  recovery: {} segments ({} from their index, {} scanned), {} corrupt records skipped, {} torn bytes cut, {} batches announced damaged",
        r.segments,
        r.indexed_segments,
        r.scanned_segments,
        r.corrupt_records,
        r.truncated_bytes,
        r.damaged_batches
    );
    o
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diag::{LinkStatus, SourceStatus};

    #[test]
    fn renders_every_section_with_its_numbers() {
        let mut s = Status {
            vehicle: "car-9".into(),
            now_us: 10_000_000,
            started_us: 4_000_000,
            ..Status::default()
        };
        s.sources.push(SourceStatus {
            name: "engine".into(),
            kind: "synthetic".into(),
            device: "50 channels at 1000 Hz".into(),
            counters: sensor_drivers::SourceCounters {
                readings: 123_456,
                connected: true,
                error_frames: 4,
                error_classes: [("bus_off".to_string(), 4)].into(),
                last_error: Some("bus off".into()),
                ..Default::default()
            },
            ..SourceStatus::default()
        });
        s.queue.stats.undelivered = 7;
        s.queue.stats.evicted_batches = 3;
        s.links.push(LinkStatus {
            name: "wwan0".into(),
            interface: Some("wwan0".into()),
            state: "up".into(),
            in_flight: 2,
            counters: crate::bond::scheduler::LinkCounters {
                sent: 99,
                acked: 97,
                ups: 1,
                ..Default::default()
            },
            last_error: None,
            address: None,
            metrics: Default::default(),
            radio: None,
        });
        let text = render(&s);
        assert!(text.contains("vehicle car-9"), "{text}");
        assert!(text.contains("up 6 s"), "{text}");
        assert!(text.contains("engine") && text.contains("123456"), "{text}");
        assert!(text.contains("error frames: bus_off 4"), "{text}");
        assert!(text.contains("last error: bus off"), "{text}");
        assert!(text.contains("undelivered 7 batches"), "{text}");
        assert!(text.contains("evicted 3"), "{text}");
        assert!(text.contains("wwan0") && text.contains("97"), "{text}");
    }
}
