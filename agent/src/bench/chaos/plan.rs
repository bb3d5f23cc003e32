//! The chaos schedule (sans-IO): which fault happens when, from a seed and a duration.
//!
//! Every kind of fault has its own stream: a first occurrence at a fixed fraction of the run (so
//! a short run sees every kind at least once) and then random intervals. Kills never fall inside
//! a disk-full episode (a start on a full disk is a different test: the queue cannot write its
//! run record), and nothing is scheduled in the last tenth of the run, so the world is calm
//! when the run ends and the backlog drains.

use crate::bench::crash::XorShift;
use serde::Serialize;
use std::collections::BTreeMap;
use std::time::Duration;

/// How the tail of the newest queue segment is torn after a kill.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Torn {
    /// Random bytes after the last record, as a write cut short in the page cache.
    Garbage,
    /// A record header promising more bytes than follow.
    PartialRecord,
}

/// Where malformed input is injected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Target {
    /// A broken sentence and binary noise on the GPS's serial port.
    Gps,
    /// Lines that do not parse on the line sensor's serial port.
    Line,
    /// Garbage, an unsolicited line inside a response or an error on a modem's AT port.
    Modem(usize),
    /// A payload that is not a batch, published on the telemetry topic.
    Wire,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Fault {
    /// SIGKILL the agent; start it again after `down`.
    Kill {
        down: Duration,
        torn: Option<Torn>,
    },
    /// Stop the broker (SIGTERM: it saves its sessions) and start it again after `down`.
    BrokerRestart {
        down: Duration,
    },
    /// The link's path drops every packet, its connection stays open.
    Blackhole {
        link: usize,
        hold: Duration,
    },
    /// The link's connection is reset (RST).
    Reset {
        link: usize,
    },
    /// The link goes down and up `times` times, `period` each way.
    Flap {
        link: usize,
        times: u32,
        period: Duration,
    },
    /// The queue's filesystem is full for `hold`.
    DiskFull {
        hold: Duration,
    },
    Malformed(Target),
    /// SIGHUP with a changed configuration file.
    Reload,
}

impl Fault {
    /// The kind's name in reports.
    pub fn kind(&self) -> &'static str {
        match self {
            Fault::Kill { .. } => "kill",
            Fault::BrokerRestart { .. } => "broker_restart",
            Fault::Blackhole { .. } => "blackhole",
            Fault::Reset { .. } => "reset",
            Fault::Flap { .. } => "flap",
            Fault::DiskFull { .. } => "disk_full",
            Fault::Malformed(_) => "malformed",
            Fault::Reload => "reload",
        }
    }
}

/// Every kind's name, in report order.
pub const KINDS: [&str; 8] = [
    "kill",
    "broker_restart",
    "blackhole",
    "reset",
    "flap",
    "disk_full",
    "malformed",
    "reload",
];

/// The schedule: faults in time order.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    events: Vec<(Duration, Fault)>,
    next: usize,
}

fn ms(r: &mut XorShift, lo: u64, hi: u64) -> Duration {
    Duration::from_millis(r.range(lo, hi))
}

fn secs(d: Duration) -> u64 {
    d.as_millis() as u64
}

impl Plan {
    /// The schedule of a run of `duration` with `links` links and `modems` modems (seeded).
    pub fn new(seed: u64, duration: Duration, links: usize, modems: usize) -> Plan {
        let mut r = XorShift::new(seed ^ 0xC4A0_5EED);
        let d = secs(duration);
        let quiet_after = d * 9 / 10;
        let mut events: Vec<(Duration, Fault)> = Vec::new();
        let at = |frac_permille: u64| Duration::from_millis(d * frac_permille / 1000);

        // Disk-full episodes first: kills avoid them.
        let mut full: Vec<(u64, u64)> = Vec::new();
        let mut t = secs(at(550));
        while t < quiet_after {
            let hold = ms(&mut r, 3_000, 8_000);
            full.push((t, t + secs(hold)));
            events.push((Duration::from_millis(t), Fault::DiskFull { hold }));
            t += r.range(90_000, 180_000);
        }
        let in_full = |t: u64| full.iter().any(|&(a, b)| t + 1_000 >= a && t <= b + 1_000);

        let mut t = secs(at(80)).max(6_000);
        while t < quiet_after {
            if !in_full(t) {
                let down = ms(&mut r, 300, 3_000);
                let torn = match r.range(0, 2) {
                    0 => None,
                    1 => Some(Torn::Garbage),
                    _ => Some(Torn::PartialRecord),
                };
                events.push((Duration::from_millis(t), Fault::Kill { down, torn }));
            }
            t += r.range(12_000, 30_000);
        }

        let mut t = secs(at(250));
        while t < quiet_after {
            events.push((Duration::from_millis(t), Fault::Reload));
            t += r.range(60_000, 120_000);
        }

        let mut t = secs(at(400));
        while t < quiet_after {
            let down = ms(&mut r, 1_000, 4_000);
            events.push((Duration::from_millis(t), Fault::BrokerRestart { down }));
            t += r.range(60_000, 150_000);
        }

        if links > 0 {
            // The three link faults in turn at first, then at random.
            let mut t = 4_000;
            let mut n = 0u64;
            while t < quiet_after {
                let link = r.range(0, links as u64 - 1) as usize;
                let pick = if n < 3 { n } else { r.range(0, 2) };
                let f = match pick {
                    0 => Fault::Blackhole {
                        link,
                        hold: ms(&mut r, 1_000, 6_000),
                    },
                    1 => Fault::Reset { link },
                    _ => Fault::Flap {
                        link,
                        times: r.range(3, 6) as u32,
                        period: ms(&mut r, 200, 600),
                    },
                };
                events.push((Duration::from_millis(t), f));
                n += 1;
                t += r.range(3_000, 9_000);
            }
        }

        // Malformed input: every target in turn at first, then at random.
        let mut targets = vec![Target::Gps, Target::Line, Target::Wire];
        targets.extend((0..modems).map(Target::Modem));
        let mut t = 2_000;
        let mut n = 0usize;
        while t < quiet_after {
            let target = if n < targets.len() {
                targets[n]
            } else {
                targets[r.range(0, targets.len() as u64 - 1) as usize]
            };
            events.push((Duration::from_millis(t), Fault::Malformed(target)));
            n += 1;
            t += r.range(2_000, 6_000);
        }

        events.sort_by_key(|e| e.0);
        Plan { events, next: 0 }
    }

    /// Faults due at `now` (each once, in order).
    pub fn due(&mut self, now: Duration) -> Vec<Fault> {
        let mut out = Vec::new();
        while let Some(&(t, f)) = self.events.get(self.next) {
            if t > now {
                break;
            }
            out.push(f);
            self.next += 1;
        }
        out
    }

    pub fn events(&self) -> &[(Duration, Fault)] {
        &self.events
    }

    /// Scheduled faults per kind.
    pub fn counts(&self) -> BTreeMap<&'static str, u64> {
        let mut m: BTreeMap<&'static str, u64> = KINDS.iter().map(|k| (*k, 0)).collect();
        for (_, f) in &self.events {
            *m.entry(f.kind()).or_default() += 1;
        }
        m
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_two_minute_run_sees_every_kind_and_every_target() {
        for seed in 0..200 {
            let p = Plan::new(seed, Duration::from_secs(120), 3, 3);
            for (k, n) in p.counts() {
                assert!(n >= 1, "seed {seed}: no {k} in {:?}", p.events());
            }
            let mut hit = [false; 6];
            for (_, f) in p.events() {
                if let Fault::Malformed(t) = f {
                    let i = match t {
                        Target::Gps => 0,
                        Target::Line => 1,
                        Target::Wire => 2,
                        Target::Modem(m) => 3 + m,
                    };
                    hit[i] = true;
                }
            }
            assert!(hit.iter().all(|h| *h), "seed {seed}: {hit:?}");
        }
    }

    #[test]
    fn due_hands_out_each_fault_once_in_order() {
        let mut p = Plan::new(7, Duration::from_secs(300), 3, 3);
        let all = p.events().len();
        let mut got = Vec::new();
        let mut now = Duration::ZERO;
        while now < Duration::from_secs(301) {
            got.extend(p.due(now));
            now += Duration::from_millis(100);
        }
        assert_eq!(got.len(), all);
        assert!(p.due(Duration::from_secs(10_000)).is_empty());
    }

    proptest! {
        #[test]
        fn kills_avoid_disk_full_and_the_end_is_quiet(seed: u64, secs in 30u64..1200) {
            let d = Duration::from_secs(secs);
            let p = Plan::new(seed, d, 3, 3);
            let full: Vec<(Duration, Duration)> = p
                .events()
                .iter()
                .filter_map(|(t, f)| match f {
                    Fault::DiskFull { hold } => Some((*t, *t + *hold)),
                    _ => None,
                })
                .collect();
            let mut last_kill: Option<Duration> = None;
            for w in p.events().windows(2) {
                prop_assert!(w[0].0 <= w[1].0, "sorted");
            }
            for (t, f) in p.events() {
                prop_assert!(*t < d * 9 / 10 + Duration::from_millis(1), "{t:?} in the quiet end");
                if let Fault::Kill { down, .. } = f {
                    for (a, b) in &full {
                        prop_assert!(
                            *t + Duration::from_secs(1) < *a || *t > *b + Duration::from_secs(1),
                            "kill at {t:?} inside disk full {a:?}..{b:?}"
                        );
                    }
                    // The agent is up again long before the next kill.
                    if let Some(k) = last_kill {
                        prop_assert!(*t >= k + Duration::from_secs(12));
                    }
                    prop_assert!(*down <= Duration::from_secs(3));
                    last_kill = Some(*t);
                }
            }
        }
    }
}
