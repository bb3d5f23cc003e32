//! The receiver's decisions (sans-IO): decode, deduplicate, account.
//!
//! Handling a message is split in two so that nothing is marked seen before it is written:
//! [`Ledger::classify`] decides what a payload is, the shell writes it, then
//! [`Ledger::commit`] records it. If writing fails, the batch stays unseen and its redelivery
//! (the broker re-sends everything not acknowledged) is written instead of dropped.

use super::accounting::{Accounting, Limits, Seen, VehicleSummary};
use crate::codec::{self, BatchId, DecodeError, GapBody, Kind, RunBody};
use sensor_drivers::Reading;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A batch seen for the first time, with its body decoded.
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    pub vehicle: String,
    pub id: BatchId,
    pub t_first_us: u64,
    pub t_last_us: u64,
    pub content: Content,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Content {
    Data {
        source: String,
        readings: Vec<Reading>,
    },
    Gap(GapBody),
    Run(RunBody),
}

#[derive(Debug, PartialEq)]
pub enum Verdict {
    /// Not a valid message (counted); acknowledge and drop it, re-delivery cannot fix it.
    Bad(DecodeError),
    /// Already written (counted); acknowledge and drop it.
    Duplicate { vehicle: String, id: BatchId },
    /// Below a low-water mark of the bounded dedup, so taken as already written (counted
    /// apart from proven duplicates); acknowledge and drop it.
    BelowLowWater { vehicle: String, id: BatchId },
    /// Write it, then [`Ledger::commit`] it, then acknowledge it.
    New(Batch),
    /// A heartbeat (recorded, nothing to write); acknowledge it.
    Heartbeat { vehicle: String, id: BatchId },
}

/// Everything the receiver knows; what `pitlink receive` prints at the end.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ReceiveSummary {
    /// MQTT messages received (any payload).
    pub messages: u64,
    pub bad_payloads: u64,
    /// The same by reason: `version`, `envelope`, `codec`, `body`, `count`, `columnar`.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub bad_by_reason: BTreeMap<String, u64>,
    /// Sessions established with the broker (1 + reconnections).
    pub connects: u64,
    /// Subscriptions the broker granted (one per session).
    pub subscribes: u64,
    pub vehicles: BTreeMap<String, VehicleSummary>,
}

/// Serialised whole as the receiver's state file (see `state.rs`).
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct Ledger {
    /// Not part of the state: set from the options at each start.
    #[serde(skip)]
    limits: Limits,
    vehicles: BTreeMap<String, Accounting>,
    messages: u64,
    bad_payloads: u64,
    /// Bad payloads by [`DecodeError::reason`].
    bad_by_reason: BTreeMap<String, u64>,
}

impl Ledger {
    pub fn new() -> Self {
        Self::default()
    }

    /// Memory bounds; they apply from the next batch on.
    pub fn set_limits(&mut self, limits: Limits) {
        self.limits = limits;
    }

    fn with_vehicle(&mut self, vehicle: &str, f: impl FnOnce(&mut Accounting)) {
        // Look up by &str first: only a vehicle's first batch allocates its key.
        match self.vehicles.get_mut(vehicle) {
            Some(acct) => f(acct),
            None => f(self.vehicles.entry(vehicle.to_string()).or_default()),
        }
    }

    fn bad(&mut self, e: DecodeError) -> Verdict {
        self.bad_payloads += 1;
        *self
            .bad_by_reason
            .entry(e.reason().to_string())
            .or_default() += 1;
        Verdict::Bad(e)
    }

    /// Decides what `payload` is. Counts messages, bad payloads and duplicates; a `New` batch
    /// is only counted by [`Ledger::commit`].
    pub fn classify(&mut self, payload: &[u8]) -> Verdict {
        self.messages += 1;
        let env = match codec::decode(payload) {
            Ok(env) => env,
            Err(e) => return self.bad(e),
        };
        if env.id.seq == u64::MAX {
            // No agent gets there (2^64 batches); the accounting's ranges cannot hold it.
            return self.bad(DecodeError::Envelope(
                "sequence number 18446744073709551615 is reserved".to_string(),
            ));
        }
        if env.kind == Kind::Heartbeat {
            // Not a batch: its id says how far the run's sequence numbers go.
            return match codec::heartbeat_body(&env) {
                Ok(h) => {
                    self.with_vehicle(&env.vehicle, |a| a.on_heartbeat(env.id.run, &h));
                    Verdict::Heartbeat {
                        vehicle: env.vehicle,
                        id: env.id,
                    }
                }
                Err(e) => self.bad(e),
            };
        }
        // Before decoding the body: a duplicate costs no more than its header.
        let seen = self
            .vehicles
            .get(&env.vehicle)
            .map_or(Seen::No, |a| a.seen(env.id));
        let samples = u64::from(env.samples);
        match seen {
            Seen::No => {}
            Seen::Yes => {
                self.with_vehicle(&env.vehicle, |a| a.on_duplicate(samples));
                return Verdict::Duplicate {
                    vehicle: env.vehicle,
                    id: env.id,
                };
            }
            Seen::BelowLowWater => {
                self.with_vehicle(&env.vehicle, |a| a.on_low_water(samples));
                return Verdict::BelowLowWater {
                    vehicle: env.vehicle,
                    id: env.id,
                };
            }
        }
        let content = match env.kind {
            Kind::Data => codec::data_readings(&env)
                .map(|(source, readings)| Content::Data { source, readings }),
            Kind::Gap => codec::gap_body(&env).map(Content::Gap),
            Kind::Run => codec::run_body(&env).map(Content::Run),
            Kind::Heartbeat => unreachable!("handled above"),
        };
        match content {
            Ok(content) => Verdict::New(Batch {
                vehicle: env.vehicle,
                id: env.id,
                t_first_us: env.t_first_us,
                t_last_us: env.t_last_us,
                content,
            }),
            // Not marked seen: an intact copy of the same batch may still arrive.
            Err(e) => self.bad(e),
        }
    }

    /// Records a batch from [`Ledger::classify`] once it is written; `now_us` is the wall
    /// clock at reception, for the end-to-end latency.
    pub fn commit(&mut self, batch: &Batch, now_us: u64) {
        let limits = self.limits;
        self.with_vehicle(&batch.vehicle, |acct| {
            let samples = match &batch.content {
                Content::Data { readings, .. } => readings.len() as u64,
                _ => 0,
            };
            // Committed twice: already counted.
            if !acct.on_batch(batch.id, samples) {
                return;
            }
            match &batch.content {
                Content::Data { .. } => acct.on_latency(now_us.saturating_sub(batch.t_last_us)),
                Content::Gap(g) => {
                    acct.on_gap(g);
                    acct.enforce(&limits, g.run);
                }
                Content::Run(r) => acct.on_run(batch.id, r),
            }
            acct.enforce(&limits, batch.id.run);
        });
    }

    pub fn summary(&self) -> ReceiveSummary {
        ReceiveSummary {
            messages: self.messages,
            bad_payloads: self.bad_payloads,
            bad_by_reason: self.bad_by_reason.clone(),
            connects: 0,
            subscribes: 0,
            vehicles: self
                .vehicles
                .iter()
                .map(|(v, a)| (v.clone(), a.summary()))
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{control_envelope, data_envelope, encode, gap_from};
    use crate::ranges::RangeSet;

    use sensor_drivers::Sample;

    fn samples(n: usize, t0: u64) -> Vec<Sample> {
        (0..n)
            .map(|i| Sample {
                t_us: t0 + i as u64 * 1000,
                channel: i as u16,
                value: i as f64 + 0.5,
            })
            .collect()
    }

    fn id(run: u32, seq: u64) -> BatchId {
        BatchId { run, seq }
    }

    #[test]
    fn classify_then_commit() {
        let mut l = Ledger::new();
        let data = encode(&data_envelope(
            "car",
            id(1, 1),
            "eng",
            &samples(3, 1_000_000),
        ));
        let Verdict::New(b) = l.classify(&data) else {
            panic!("expected a new batch");
        };
        assert_eq!(b.t_last_us, 1_002_000);
        // Not committed yet (e.g. the write failed): the redelivery is new again.
        assert!(matches!(l.classify(&data), Verdict::New(_)));
        l.commit(&b, 1_012_000);
        l.commit(&b, 1_012_000);
        assert!(matches!(l.classify(&data), Verdict::Duplicate { .. }));
        assert!(matches!(l.classify(b"\x01garbage"), Verdict::Bad(_)));
        assert!(matches!(l.classify(&[]), Verdict::Bad(DecodeError::Empty)));
        let top = encode(&data_envelope(
            "car",
            id(1, u64::MAX),
            "eng",
            &samples(1, 1),
        ));
        assert!(matches!(
            l.classify(&top),
            Verdict::Bad(DecodeError::Envelope(_))
        ));

        let mut seqs = RangeSet::new();
        seqs.insert_range(2, 4);
        let g = control_envelope(
            "car",
            id(1, 4),
            Kind::Gap,
            5,
            &gap_from(codec::GapCause::Evicted, 1, &seqs, 9, 1, 2),
        );
        let Verdict::New(gb) = l.classify(&encode(&g)) else {
            panic!("expected a gap batch");
        };
        l.commit(&gb, 6);

        let s = l.summary();
        assert_eq!((s.messages, s.bad_payloads), (7, 3));
        assert_eq!(
            s.bad_by_reason
                .iter()
                .map(|(k, &v)| (k.as_str(), v))
                .collect::<Vec<_>>(),
            [("empty", 1), ("envelope", 2)]
        );
        let v = &s.vehicles["car"];
        assert_eq!((v.batches, v.samples), (2, 3));
        assert_eq!((v.duplicate_batches, v.duplicate_samples), (1, 3));
        assert_eq!((v.evicted_batches, v.evicted_samples), (2, 9));
        // Seq 0 (the run announcement) has not arrived.
        assert_eq!(v.missing_batches, 1);
        assert_eq!(v.latency_ms_p50, Some(10.0));
    }

    fn one_sample(vehicle: &str, bid: BatchId) -> Vec<u8> {
        encode(&data_envelope(
            vehicle,
            bid,
            "s",
            &samples(1, 1_000 + bid.seq),
        ))
    }

    fn evicted(vehicle: &str, bid: BatchId, run: u32, seqs: (u64, u64)) -> Vec<u8> {
        let mut set = RangeSet::new();
        set.insert_range(seqs.0, seqs.1);
        encode(&control_envelope(
            vehicle,
            bid,
            Kind::Gap,
            5,
            &gap_from(codec::GapCause::Evicted, run, &set, 1, 1, 2),
        ))
    }

    /// State bytes after 100 000 batches with one hole in ten, bounded and unbounded.
    #[test]
    fn state_size_is_bounded() {
        let size = |limits: Limits| {
            let mut l = Ledger::new();
            l.set_limits(limits);
            for seq in (0..100_000u64).filter(|s| s % 10 != 5) {
                if let Verdict::New(b) = l.classify(&one_sample("car", id(1, seq))) {
                    l.commit(&b, 2_000_000);
                }
            }
            let v = &l.summary().vehicles["car"];
            assert_eq!(v.batches + v.untracked_batches + v.missing_batches, 100_000);
            super::super::state::encode(&BTreeMap::new(), &l).len()
        };
        let bounded = size(Limits::default());
        let unbounded = size(Limits {
            max_runs: usize::MAX,
            max_ranges: usize::MAX,
        });
        eprintln!(
            "state after 1e5 batches, 1e4 holes: {bounded} bytes bounded, {unbounded} unbounded"
        );
        assert!(bounded < 32 << 10, "{bounded} bytes");
        assert!(unbounded > 4 * bounded, "{unbounded} vs {bounded}");
    }

    proptest::proptest! {
        /// Under any arrival order, with tiny bounds and a save/restore of the state at a random
        /// moment: no batch is ever written twice, a "duplicate" verdict is always a batch written
        /// before, and every arrival is written, a duplicate or counted below the low-water mark.
        #[test]
        fn bounded_ledger_never_writes_twice_and_counts_the_rest(
            ids in proptest::collection::vec((0u32..6, 0u64..40), 1..120),
            repeats in proptest::collection::vec(1usize..3, 120),
            gaps in proptest::collection::vec((0u32..6, 0u64..40, 1u64..5), 0..8),
            order in proptest::collection::vec(proptest::prelude::any::<u32>(), 400),
            restore_at in 0usize..400,
            max_runs in 1usize..4,
            max_ranges in 2usize..6,
        ) {
            let limits = Limits { max_runs, max_ranges };
            let mut arrivals = Vec::new();
            for (i, &(run, seq)) in ids.iter().enumerate() {
                for _ in 0..repeats[i % repeats.len()] {
                    arrivals.push((id(run, seq), one_sample("car", id(run, seq))));
                }
            }
            for (i, &(run, s, n)) in gaps.iter().enumerate() {
                // Notices live at seq 100.. of their run: never collide with data ids.
                let bid = id(run, 100 + i as u64);
                arrivals.push((bid, evicted("car", bid, run, (s, s + n))));
            }
            let mut keyed: Vec<_> = arrivals.into_iter().enumerate()
                .map(|(i, a)| (order[i % order.len()], i, a)).collect();
            keyed.sort_by_key(|k| (k.0, k.1));
            let mut l = Ledger::new();
            l.set_limits(limits);
            let mut written = std::collections::HashSet::new();
            let total = keyed.len() as u64;
            for (i, (_, _, (bid, payload))) in keyed.into_iter().enumerate() {
                if i == restore_at {
                    let bytes = super::super::state::encode(&BTreeMap::new(), &l);
                    l = super::super::state::decode(&bytes).expect("own state decodes").ledger;
                    l.set_limits(limits);
                }
                match l.classify(&payload) {
                    Verdict::New(b) => {
                        proptest::prop_assert!(written.insert(bid), "{} written twice", bid);
                        l.commit(&b, 10);
                    }
                    Verdict::Duplicate { id, .. } => {
                        proptest::prop_assert!(written.contains(&id), "{} called a duplicate, never written", id);
                    }
                    Verdict::BelowLowWater { .. } => {}
                    Verdict::Bad(e) => proptest::prop_assert!(false, "bad: {}", e),
                    Verdict::Heartbeat { .. } => proptest::prop_assert!(false, "no heartbeat was sent"),
                }
            }
            let s = l.summary();
            proptest::prop_assert_eq!(s.messages, total);
            let v = &s.vehicles["car"];
            proptest::prop_assert_eq!(v.batches, written.len() as u64);
            proptest::prop_assert_eq!(v.batches + v.duplicate_batches + v.low_water_batches, total);
            let distinct: std::collections::HashSet<BatchId> = ids.iter().map(|&(r, q)| id(r, q))
                .chain(gaps.iter().enumerate().map(|(i, g)| id(g.0, 100 + i as u64))).collect();
            let unwritten = distinct.iter().filter(|b| !written.contains(b)).count() as u64;
            proptest::prop_assert!(unwritten <= v.low_water_batches, "{} unwritten, {} counted", unwritten, v.low_water_batches);
            proptest::prop_assert!(v.runs.len() <= max_runs);
        }
    }

    #[test]
    fn heartbeats_reveal_the_tail_still_in_the_car() {
        let mut l = Ledger::new();
        for seq in [0, 1] {
            let Verdict::New(b) = l.classify(&encode(&data_envelope(
                "car",
                id(2, seq),
                "eng",
                &samples(2, 1),
            ))) else {
                panic!("new batch expected");
            };
            l.commit(&b, 10);
        }
        assert_eq!(l.summary().vehicles["car"].missing_batches, 0);
        let hb = codec::HeartbeatBody {
            next_seq: 5,
            backlog_batches: 3,
        };
        let msg = encode(&control_envelope("car", id(2, 5), Kind::Heartbeat, 9, &hb));
        assert!(matches!(l.classify(&msg), Verdict::Heartbeat { .. }));
        // Again: heartbeats are not batches, so never duplicates.
        assert!(matches!(l.classify(&msg), Verdict::Heartbeat { .. }));
        let v = &l.summary().vehicles["car"];
        assert_eq!((v.heartbeats, v.backlog_batches), (2, Some(3)));
        assert_eq!(v.missing_batches, 3, "seqs 2, 3 and 4 are still in the car");
        assert_eq!(v.batches, 2);
    }

    #[test]
    fn corrupt_body_is_bad_and_not_marked_seen() {
        let mut l = Ledger::new();
        let mut env = data_envelope("car", id(1, 1), "eng", &samples(3, 1));
        let good = encode(&env);
        env.body.truncate(2);
        assert!(matches!(l.classify(&encode(&env)), Verdict::Bad(_)));
        assert!(matches!(l.classify(&good), Verdict::New(_)));
        assert_eq!(l.summary().bad_payloads, 1);
    }
}
