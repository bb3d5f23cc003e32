//! Batch deduplication (sans-IO).
//!
//! Bonding re-sends a batch on another link whenever an ack is late, and the broker re-delivers
//! whatever the receiver had not acknowledged when it lost its session, so the same batch can
//! arrive any number of times. Batch ids are never reused (invariant 2), so "seen before" is
//! exactly "duplicate". Seen sequence numbers are kept per (vehicle, run) as a [`RangeSet`]:
//! memory grows with the number of holes, not with the number of batches.

use crate::codec::BatchId;
use crate::ranges::RangeSet;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};

#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct Dedup {
    vehicles: HashMap<String, BTreeMap<u32, Seen>>,
}

/// Seen sequence numbers of one run.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
struct Seen {
    seqs: RangeSet,
    /// `u64::MAX` separately: half-open ranges cannot hold it.
    top: bool,
}

impl Seen {
    fn insert(&mut self, seq: u64) -> bool {
        if seq == u64::MAX {
            return !std::mem::replace(&mut self.top, true);
        }
        self.seqs.insert(seq)
    }

    fn contains(&self, seq: u64) -> bool {
        if seq == u64::MAX {
            return self.top;
        }
        self.seqs.contains(seq)
    }
}

impl Dedup {
    pub fn new() -> Self {
        Self::default()
    }

    /// Records `id` of `vehicle`; true the first time it is seen, false for every repeat.
    pub fn observe(&mut self, vehicle: &str, id: BatchId) -> bool {
        // Look up by &str first so the common case (known vehicle) allocates nothing.
        let runs = match self.vehicles.get_mut(vehicle) {
            Some(runs) => runs,
            None => self.vehicles.entry(vehicle.to_string()).or_default(),
        };
        runs.entry(id.run).or_default().insert(id.seq)
    }

    /// Whether `id` of `vehicle` was already observed (does not record it).
    pub fn is_seen(&self, vehicle: &str, id: BatchId) -> bool {
        self.vehicles
            .get(vehicle)
            .and_then(|runs| runs.get(&id.run))
            .is_some_and(|seen| seen.contains(id.seq))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashSet;

    fn id(run: u32, seq: u64) -> BatchId {
        BatchId { run, seq }
    }

    #[test]
    fn first_sighting_only() {
        let mut d = Dedup::new();
        assert!(d.observe("car-1", id(1, 0)));
        assert!(!d.observe("car-1", id(1, 0)));
        // Same id, other vehicle or other run: a different batch.
        assert!(d.observe("car-2", id(1, 0)));
        assert!(d.observe("car-1", id(2, 0)));
        assert!(d.is_seen("car-1", id(2, 0)));
        assert!(!d.is_seen("car-1", id(2, 1)));
        assert!(!d.is_seen("car-3", id(1, 0)));
        assert!(d.observe("car-1", id(1, u64::MAX)));
        assert!(!d.observe("car-1", id(1, u64::MAX)));
    }

    proptest! {
        /// Any arrival order with any number of repeats: each id is accepted exactly once.
        #[test]
        fn each_id_accepted_exactly_once(
            ids in proptest::collection::vec((0u8..3, 0u32..3, 0u64..40), 1..60),
            repeats in proptest::collection::vec(1usize..4, 60),
            order in proptest::collection::vec(any::<u32>(), 240),
        ) {
            let vehicles = ["a", "b", "c"];
            let mut arrivals = Vec::new();
            for (i, &(v, run, seq)) in ids.iter().enumerate() {
                for _ in 0..repeats[i % repeats.len()] {
                    arrivals.push((vehicles[v as usize], id(run, seq)));
                }
            }
            // A deterministic shuffle driven by proptest's values.
            let mut keyed: Vec<_> = arrivals.into_iter().enumerate()
                .map(|(i, a)| (order[i % order.len()], i, a)).collect();
            keyed.sort();
            let mut d = Dedup::new();
            let mut accepted = HashSet::new();
            for (_, _, (v, bid)) in keyed {
                let first = d.observe(v, bid);
                prop_assert_eq!(first, accepted.insert((v, bid)));
                prop_assert!(d.is_seen(v, bid));
            }
            let distinct: HashSet<_> = ids.iter().map(|&(v, r, s)| (vehicles[v as usize], id(r, s))).collect();
            prop_assert_eq!(accepted, distinct);
        }
    }
}
