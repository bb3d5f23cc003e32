//! `pitlink links`: the bonded uplink per link, taken from the status snapshot.

use super::{LinkStatus, Status};
use crate::bond::scheduler::RadioBand;
use serde::{Deserialize, Serialize};
use std::fmt::Write;

/// Every link of the running agent (`pitlink links --json` prints this object).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Links {
    pub vehicle: String,
    pub now_us: u64,
    pub links: Vec<LinkView>,
}

/// One link.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LinkView {
    pub name: String,
    /// up, suspect or down.
    pub state: String,
    pub interface: Option<String>,
    /// The broker address the link connects to.
    pub address: Option<String>,
    pub rtt: Rtt,
    /// Goodput estimate (bytes acknowledged per second), once measured.
    pub goodput_bytes_s: Option<f64>,
    pub in_flight: InFlight,
    /// Radio band the scheduler uses for the link.
    pub band: Option<RadioBand>,
    pub batches: Batches,
    pub heartbeats: Heartbeats,
    /// Sessions established and lost, and times the link turned suspect.
    pub ups: u64,
    pub downs: u64,
    pub suspects: u64,
    pub last_error: Option<String>,
    /// The link's modem: serving cell and its metrics (absent without a modem).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub radio: Option<super::LinkRadio>,
}

/// Round-trip estimates from PUBACK timing (ms).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rtt {
    pub srtt_ms: Option<f64>,
    pub rttvar_ms: Option<f64>,
    pub rto_ms: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InFlight {
    pub batches: u64,
    pub bytes: u64,
    /// Bytes-in-flight limit.
    pub window_bytes: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Batches {
    pub sent: u64,
    pub acked: u64,
    pub moved: u64,
    pub duplicated: u64,
    pub duplicate_acks: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Heartbeats {
    pub sent: u64,
    pub acked: u64,
    pub lost: u64,
}

impl LinkView {
    fn of(l: &LinkStatus) -> LinkView {
        let c = &l.counters;
        let m = &l.metrics;
        LinkView {
            name: l.name.clone(),
            state: l.state.clone(),
            interface: l.interface.clone(),
            address: l.address.clone(),
            rtt: Rtt {
                srtt_ms: m.srtt_ms,
                rttvar_ms: m.rttvar_ms,
                rto_ms: m.rto_ms,
            },
            goodput_bytes_s: m.goodput_bytes_s,
            in_flight: InFlight {
                batches: l.in_flight,
                bytes: m.in_flight_bytes,
                window_bytes: m.window_bytes,
            },
            band: m.band,
            batches: Batches {
                sent: c.sent,
                acked: c.acked,
                moved: c.moved,
                duplicated: c.duplicated,
                duplicate_acks: c.duplicate_acks,
            },
            heartbeats: Heartbeats {
                sent: c.heartbeats_sent,
                acked: c.heartbeats_acked,
                lost: c.heartbeats_lost,
            },
            ups: c.ups,
            downs: c.downs,
            suspects: c.suspects,
            last_error: l.last_error.clone(),
            radio: l.radio.clone(),
        }
    }
}

fn opt_ms(v: Option<f64>) -> String {
    v.map_or_else(|| "-".into(), |x| format!("{x:.0}"))
}

impl Links {
    /// The links of a status snapshot.
    pub fn of(s: &Status) -> Links {
        Links {
            vehicle: s.vehicle.clone(),
            now_us: s.now_us,
            links: s.links.iter().map(LinkView::of).collect(),
        }
    }

    /// A header and one line per link.
    pub fn render(&self) -> String {
        let mut o = String::new();
        let _ = writeln!(
            o,
            "{:<10} {:<7} {:<10} {:<21} {:>15} {:>10} {:>18} {:>8} {:>8} {:>6} {:>6} {:>6} {:>11}",
            "link",
            "state",
            "iface",
            "address",
            "rtt/var/rto ms",
            "goodput",
            "in flight",
            "sent",
            "acked",
            "moved",
            "dup",
            "dupack",
            "hb sent/lost"
        );
        for l in &self.links {
            let goodput = l
                .goodput_bytes_s
                .map_or_else(|| "-".into(), |b| format!("{:.2}M", b * 8.0 / 1e6));
            let _ = writeln!(
                o,
                "{:<10} {:<7} {:<10} {:<21} {:>15} {:>10} {:>18} {:>8} {:>8} {:>6} {:>6} {:>6} {:>11}",
                l.name,
                l.state,
                l.interface.as_deref().unwrap_or("-"),
                l.address.as_deref().unwrap_or("-"),
                format!(
                    "{}/{}/{:.0}",
                    opt_ms(l.rtt.srtt_ms),
                    opt_ms(l.rtt.rttvar_ms),
                    l.rtt.rto_ms
                ),
                goodput,
                format!(
                    "{} {}K/{}K",
                    l.in_flight.batches,
                    l.in_flight.bytes >> 10,
                    l.in_flight.window_bytes >> 10
                ),
                l.batches.sent,
                l.batches.acked,
                l.batches.moved,
                l.batches.duplicated,
                l.batches.duplicate_acks,
                format!("{}/{}", l.heartbeats.sent, l.heartbeats.lost),
            );
            if let Some(r) = &l.radio {
                let num = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.0}"));
                let _ = writeln!(
                    o,
                    "  {}: radio {} cell {} RSRP {} dBm RSRQ {} dB SINR {} dB{}",
                    l.name,
                    r.rat.as_deref().unwrap_or("-"),
                    match (r.earfcn, r.pci) {
                        (Some(e), Some(p)) => format!("{e}/{p}"),
                        _ => "-".into(),
                    },
                    num(r.rsrp_dbm),
                    num(r.rsrq_db),
                    num(r.sinr_db),
                    r.error
                        .as_ref()
                        .map(|e| format!(" ({e})"))
                        .unwrap_or_default()
                );
            }
            if let Some(e) = &l.last_error
                && l.state != "up"
            {
                let _ = writeln!(o, "  {}: {e}", l.name);
            }
        }
        o
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bond::scheduler::LinkState;

    #[test]
    fn one_line_per_link_and_json_carries_every_figure() {
        let c = crate::bond::scheduler::LinkCounters {
            sent: 7,
            acked: 5,
            moved: 2,
            heartbeats_sent: 3,
            ..Default::default()
        };
        let st = Status {
            vehicle: "car".into(),
            links: vec![
                LinkStatus::new("a", Some("wwan0"), LinkState::Up, 2, c, None)
                    .with_address(Some("127.0.0.1:1883".into())),
                LinkStatus::new(
                    "b",
                    None,
                    LinkState::Down,
                    0,
                    Default::default(),
                    Some("refused".into()),
                ),
            ],
            ..Status::default()
        };
        let l = Links::of(&st);
        let text = l.render();
        assert_eq!(text.lines().count(), 1 + 2 + 1, "{text}");
        assert!(
            text.contains("wwan0") && text.contains("127.0.0.1:1883"),
            "{text}"
        );
        assert!(text.contains("b: refused"), "{text}");
        let j = serde_json::to_value(&l).expect("json");
        assert_eq!(j["links"][0]["batches"]["moved"], 2);
        assert_eq!(j["links"][0]["in_flight"]["batches"], 2);
        assert_eq!(j["links"][0]["heartbeats"]["sent"], 3);
        assert_eq!(j["links"][1]["state"], "down");
        assert!(j["links"][0].get("radio").is_none());
        let back: Links = serde_json::from_value(j).expect("round trip");
        assert_eq!(back, l);
    }
}
