//! Prometheus metrics (`[metrics] listen`, off by default): `GET /metrics` in the text
//! exposition format, built from the same status snapshot as `pitlink status`.
//!
//! Hand-written rather than through the `metrics` crate: every figure already lives in the
//! [`Status`] the core publishes ten times a second, so rendering it on request needs no second
//! set of counters, no recorder and no extra task; the HTTP side is one request per connection.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::Status;

/// Largest request head read.
const MAX_REQUEST: usize = 8 * 1024;

/// Serves `/metrics` on `listen` until `stop`.
pub async fn serve(
    listen: SocketAddr,
    status: watch::Receiver<Status>,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    let l = TcpListener::bind(listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {listen} for metrics: {e}"))?;
    tracing::info!("metrics on http://{listen}/metrics");
    loop {
        let (mut conn, _) = tokio::select! {
            _ = stop.cancelled() => return Ok(()),
            r = l.accept() => match r {
                Ok(c) => c,
                Err(_) => continue,
            },
        };
        let status = status.clone();
        tokio::spawn(async move {
            let mut buf = Vec::new();
            let head = tokio::time::timeout(Duration::from_secs(2), async {
                let mut chunk = [0u8; 1024];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") && buf.len() < MAX_REQUEST {
                    match conn.read(&mut chunk).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
            })
            .await;
            if head.is_err() {
                return;
            }
            let line = String::from_utf8_lossy(&buf);
            let first = line.lines().next().unwrap_or("");
            let reply = if first.starts_with("GET /metrics ") || first == "GET /metrics" {
                let body = render(&status.borrow());
                format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                )
            } else {
                "HTTP/1.1 404 Not Found\r\nContent-Type: text/plain\r\nContent-Length: 25\r\nConnection: close\r\n\r\nonly /metrics is served\r\n".to_string()
            };
            let _ = conn.write_all(reply.as_bytes()).await;
            let _ = conn.shutdown().await;
        });
    }
}

/// Escapes a label value.
fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

struct Out(String);

impl Out {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.0, "# HELP {name} {help}\n# TYPE {name} {kind}");
    }
    fn sample(&mut self, name: &str, labels: &[(&str, &str)], v: f64) {
        if !v.is_finite() {
            return;
        }
        let l: Vec<String> = labels
            .iter()
            .map(|(k, v)| format!("{k}=\"{}\"", label(v)))
            .collect();
        if l.is_empty() {
            let _ = writeln!(self.0, "{name} {v}");
        } else {
            let _ = writeln!(self.0, "{name}{{{}}} {v}", l.join(","));
        }
    }
}

/// The exposition of `s`.
pub fn render(s: &Status) -> String {
    let mut o = Out(String::new());
    o.family(
        "pitlink_info",
        "gauge",
        "Version and vehicle of the running agent.",
    );
    o.sample(
        "pitlink_info",
        &[("version", &s.version), ("vehicle", &s.vehicle)],
        1.0,
    );
    o.family(
        "pitlink_uptime_seconds",
        "gauge",
        "Time since the pipeline started.",
    );
    o.sample(
        "pitlink_uptime_seconds",
        &[],
        s.now_us.saturating_sub(s.started_us) as f64 / 1e6,
    );

    type SourceMetric = (
        &'static str,
        &'static str,
        &'static str,
        fn(&super::SourceStatus) -> f64,
    );
    let per_source: [SourceMetric; 6] = [
        (
            "pitlink_source_readings_total",
            "counter",
            "Readings (samples or frames) produced.",
            |x| x.counters.readings as f64,
        ),
        (
            "pitlink_source_readings_per_second",
            "gauge",
            "Readings per second over the last second.",
            |x| x.readings_per_s,
        ),
        (
            "pitlink_source_parse_errors_total",
            "counter",
            "Malformed input counted and skipped.",
            |x| x.counters.parse_errors as f64,
        ),
        (
            "pitlink_source_dropped_total",
            "counter",
            "Readings dropped because the pipeline was full.",
            |x| x.counters.drops as f64,
        ),
        (
            "pitlink_source_reconnects_total",
            "counter",
            "Times the device was opened again.",
            |x| x.counters.reconnects as f64,
        ),
        (
            "pitlink_source_connected",
            "gauge",
            "1 while the device is open.",
            |x| f64::from(u8::from(x.counters.connected)),
        ),
    ];
    for (name, kind, help, f) in per_source {
        o.family(name, kind, help);
        for src in &s.sources {
            o.sample(name, &[("source", &src.name), ("kind", &src.kind)], f(src));
        }
    }

    let q = &s.queue.stats;
    let oldest = q
        .oldest_undelivered_us
        .map_or(0.0, |t| s.now_us.saturating_sub(t) as f64 / 1e6);
    for (name, kind, help, v) in [
        (
            "pitlink_queue_undelivered_batches",
            "gauge",
            "Batches in the queue not yet acknowledged by the broker.",
            q.undelivered as f64,
        ),
        (
            "pitlink_queue_oldest_undelivered_age_seconds",
            "gauge",
            "Age of the oldest undelivered batch.",
            oldest,
        ),
        (
            "pitlink_queue_disk_bytes",
            "gauge",
            "Bytes of queue segments on disk.",
            q.bytes_on_disk as f64,
        ),
        (
            "pitlink_queue_cap_bytes",
            "gauge",
            "Disk cap of the queue.",
            q.cap_bytes as f64,
        ),
        (
            "pitlink_queue_appended_batches_total",
            "counter",
            "Batches appended to the queue.",
            q.appended_batches as f64,
        ),
        (
            "pitlink_queue_delivered_batches_total",
            "counter",
            "Batches acknowledged by the broker.",
            q.delivered_batches as f64,
        ),
        (
            "pitlink_queue_evicted_batches_total",
            "counter",
            "Batches evicted by the disk cap (reported to the receiver).",
            q.evicted_batches as f64,
        ),
        (
            "pitlink_queue_evicted_samples_total",
            "counter",
            "Samples in evicted batches.",
            q.evicted_samples as f64,
        ),
        (
            "pitlink_queue_dropped_batches_total",
            "counter",
            "Batches that could not be written (reported to the receiver).",
            q.dropped_batches as f64,
        ),
        (
            "pitlink_queue_write_errors_total",
            "counter",
            "Queue write errors.",
            q.write_errors as f64,
        ),
    ] {
        o.family(name, kind, help);
        o.sample(name, &[], v);
    }

    type LinkMetric = (
        &'static str,
        &'static str,
        &'static str,
        fn(&super::LinkStatus) -> Option<f64>,
    );
    let per_link: [LinkMetric; 14] = [
        (
            "pitlink_link_up",
            "gauge",
            "1 while the link carries batches.",
            |l| Some(f64::from(u8::from(l.state == "up"))),
        ),
        (
            "pitlink_link_batches_sent_total",
            "counter",
            "Batch publishes handed to the link (copies included).",
            |l| Some(l.counters.sent as f64),
        ),
        (
            "pitlink_link_batches_acked_total",
            "counter",
            "Batches the broker acknowledged on the link.",
            |l| Some(l.counters.acked as f64),
        ),
        (
            "pitlink_link_batches_moved_total",
            "counter",
            "Batches taken back from the link (down, suspect or late) and sent again.",
            |l| Some(l.counters.moved as f64),
        ),
        (
            "pitlink_link_batches_duplicated_total",
            "counter",
            "Extra copies of critical batches sent on the link.",
            |l| Some(l.counters.duplicated as f64),
        ),
        (
            "pitlink_link_duplicate_acks_total",
            "counter",
            "Acknowledgements of batches already delivered by another send.",
            |l| Some(l.counters.duplicate_acks as f64),
        ),
        (
            "pitlink_link_downs_total",
            "counter",
            "Times the link went down.",
            |l| Some(l.counters.downs as f64),
        ),
        (
            "pitlink_link_rtt_seconds",
            "gauge",
            "Smoothed round-trip time of acknowledgements.",
            |l| l.metrics.srtt_ms.map(|v| v / 1000.0),
        ),
        (
            "pitlink_link_goodput_bytes_per_second",
            "gauge",
            "Acknowledged bytes per second (estimate).",
            |l| l.metrics.goodput_bytes_s,
        ),
        (
            "pitlink_link_in_flight_bytes",
            "gauge",
            "Bytes published and not yet acknowledged.",
            |l| Some(l.metrics.in_flight_bytes as f64),
        ),
        (
            "pitlink_link_rsrp_dbm",
            "gauge",
            "RSRP of the link's modem's serving cell.",
            |l| l.radio.as_ref().and_then(|r| r.rsrp_dbm),
        ),
        (
            "pitlink_link_rsrq_db",
            "gauge",
            "RSRQ of the link's modem's serving cell.",
            |l| l.radio.as_ref().and_then(|r| r.rsrq_db),
        ),
        (
            "pitlink_link_sinr_db",
            "gauge",
            "SINR of the link's modem's serving cell.",
            |l| l.radio.as_ref().and_then(|r| r.sinr_db),
        ),
        (
            "pitlink_link_serving_pci",
            "gauge",
            "Physical cell id of the link's modem's serving cell.",
            |l| l.radio.as_ref().and_then(|r| r.pci).map(f64::from),
        ),
    ];
    for (name, kind, help, f) in per_link {
        o.family(name, kind, help);
        for l in &s.links {
            if let Some(v) = f(l) {
                o.sample(name, &[("link", &l.name)], v);
            }
        }
    }
    let t = &s.towers;
    for (name, kind, help, v) in [
        (
            "pitlink_tower_switches_total",
            "counter",
            "Cell locks and releases decided by the tower policy.",
            t.switches as f64,
        ),
        (
            "pitlink_tower_failures_total",
            "counter",
            "Tower commands refused by a modem or failed.",
            t.failures as f64,
        ),
        (
            "pitlink_cellmap_entries",
            "gauge",
            "(location, cell) entries in the learned cell map.",
            t.map_entries as f64,
        ),
    ] {
        o.family(name, kind, help);
        o.sample(name, &[], v);
    }
    o.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diag::{LinkStatus, SourceStatus};

    #[test]
    fn every_family_has_help_and_type_and_labels_are_escaped() {
        let mut s = Status {
            vehicle: "car \"9\"".into(),
            version: "0.1.0".into(),
            now_us: 10_000_000,
            started_us: 4_000_000,
            ..Status::default()
        };
        s.sources.push(SourceStatus {
            name: "engine".into(),
            kind: "synthetic".into(),
            readings_per_s: 1000.0,
            ..SourceStatus::default()
        });
        s.links.push(LinkStatus {
            name: "a".into(),
            interface: None,
            state: "up".into(),
            in_flight: 0,
            counters: Default::default(),
            last_error: None,
            metrics: Default::default(),
            radio: None,
            address: None,
        });
        let text = render(&s);
        assert!(
            text.contains("pitlink_info{version=\"0.1.0\",vehicle=\"car \\\"9\\\"\"} 1"),
            "{text}"
        );
        assert!(text.contains("pitlink_uptime_seconds 6"), "{text}");
        assert!(text.contains(
            "pitlink_source_readings_per_second{source=\"engine\",kind=\"synthetic\"} 1000"
        ));
        assert!(text.contains("pitlink_link_up{link=\"a\"} 1"));
        assert!(
            !text.contains("pitlink_link_rsrp_dbm{"),
            "no radio, no sample"
        );
        // Every sample line belongs to a family declared before it.
        let mut declared = std::collections::HashSet::new();
        for l in text.lines() {
            if let Some(rest) = l.strip_prefix("# TYPE ") {
                declared.insert(rest.split(' ').next().unwrap_or("").to_string());
            } else if !l.starts_with('#') {
                let name = l.split(['{', ' ']).next().unwrap_or("");
                assert!(declared.contains(name), "{name} undeclared");
                if name.ends_with("_total") {
                    assert!(text.contains(&format!("# TYPE {name} counter")));
                }
            }
        }
    }
}
