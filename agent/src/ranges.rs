//! A set of `u64` kept as sorted, disjoint, non-adjacent half-open ranges.
//!
//! Used wherever a set of batch sequence numbers must stay small in memory whatever the
//! arrival order: delivered batches in the queue, seen batches in the receiver's dedup.
//! Memory is proportional to the number of holes, not to the number of members.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RangeSet {
    /// start -> end (exclusive); no two ranges touch or overlap.
    ranges: BTreeMap<u64, u64>,
}

impl RangeSet {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn contains(&self, x: u64) -> bool {
        self.ranges
            .range(..=x)
            .next_back()
            .is_some_and(|(_, &end)| x < end)
    }

    /// Inserts `x`; returns false if it was already present. `u64::MAX` cannot be stored
    /// (ranges are half-open) and is refused with `false`; sequence numbers never get there.
    pub fn insert(&mut self, x: u64) -> bool {
        if x == u64::MAX || self.contains(x) {
            return false;
        }
        self.insert_range(x, x + 1);
        true
    }

    /// Inserts `[start, end)`.
    pub fn insert_range(&mut self, mut start: u64, mut end: u64) {
        if start >= end {
            return;
        }
        // Merge with a range that starts before `start` and reaches it.
        if let Some((&s, &e)) = self.ranges.range(..=start).next_back()
            && e >= start
        {
            start = s;
            end = end.max(e);
            self.ranges.remove(&s);
        }
        // Swallow every range starting inside [start, end].
        let inside: Vec<(u64, u64)> = self
            .ranges
            .range(start..=end)
            .map(|(&s, &e)| (s, e))
            .collect();
        for (s, e) in inside {
            end = end.max(e);
            self.ranges.remove(&s);
        }
        self.ranges.insert(start, end);
    }

    /// Removes `x`; returns true if it was present.
    pub fn remove(&mut self, x: u64) -> bool {
        let Some((&s, &e)) = self.ranges.range(..=x).next_back() else {
            return false;
        };
        if x >= e {
            return false;
        }
        self.ranges.remove(&s);
        if s < x {
            self.ranges.insert(s, x);
        }
        if x + 1 < e {
            self.ranges.insert(x + 1, e);
        }
        true
    }

    /// Number of members in `[start, end)`.
    pub fn count_in(&self, start: u64, end: u64) -> u64 {
        let holes: u64 = self.holes(start, end).iter().map(|(s, e)| e - s).sum();
        end.saturating_sub(start) - holes
    }

    pub fn min(&self) -> Option<u64> {
        self.ranges.keys().next().copied()
    }

    /// Number of members.
    pub fn len(&self) -> u64 {
        self.ranges.iter().map(|(s, e)| e - s).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    /// Number of disjoint ranges (the memory cost).
    pub fn range_count(&self) -> usize {
        self.ranges.len()
    }

    pub fn iter_ranges(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.ranges.iter().map(|(&s, &e)| (s, e))
    }

    /// Members of `[start, end)` not in the set, as ranges.
    pub fn holes(&self, start: u64, end: u64) -> Vec<(u64, u64)> {
        let mut out = Vec::new();
        let mut cur = start;
        for (s, e) in self.iter_ranges() {
            if e <= cur {
                continue;
            }
            if s >= end {
                break;
            }
            if s > cur {
                out.push((cur, s.min(end)));
            }
            cur = cur.max(e);
            if cur >= end {
                break;
            }
        }
        if cur < end {
            out.push((cur, end));
        }
        out
    }

    /// Removes every member below `x`.
    pub fn remove_below(&mut self, x: u64) {
        let below: Vec<(u64, u64)> = self.ranges.range(..x).map(|(&s, &e)| (s, e)).collect();
        for (s, e) in below {
            self.ranges.remove(&s);
            if e > x {
                self.ranges.insert(x, e);
            }
        }
    }

    pub fn max(&self) -> Option<u64> {
        self.ranges.iter().next_back().map(|(_, &e)| e - 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    #[test]
    fn merges_adjacent_and_overlapping() {
        let mut r = RangeSet::new();
        assert!(r.insert(5));
        assert!(r.insert(7));
        assert_eq!(r.range_count(), 2);
        assert!(r.insert(6));
        assert_eq!(r.range_count(), 1);
        assert!(!r.insert(6));
        r.insert_range(0, 5);
        assert_eq!(r.iter_ranges().collect::<Vec<_>>(), vec![(0, 8)]);
        assert_eq!(r.holes(0, 10), vec![(8, 10)]);
        r.remove_below(3);
        assert_eq!(r.iter_ranges().collect::<Vec<_>>(), vec![(3, 8)]);
        assert_eq!(r.max(), Some(7));
    }

    proptest! {
        #[test]
        fn behaves_like_a_btreeset(ops in proptest::collection::vec((0u64..200, 1u64..6), 0..200), probe in 0u64..220) {
            let mut r = RangeSet::new();
            let mut m = BTreeSet::new();
            for (start, len) in ops {
                r.insert_range(start, start + len);
                m.extend(start..start + len);
            }
            prop_assert_eq!(r.len(), m.len() as u64);
            prop_assert_eq!(r.contains(probe), m.contains(&probe));
            let holes: u64 = r.holes(0, 220).iter().map(|(s, e)| e - s).sum();
            prop_assert_eq!(holes, 220 - m.iter().filter(|&&x| x < 220).count() as u64);
            // Ranges are disjoint and never adjacent.
            let v: Vec<_> = r.iter_ranges().collect();
            for w in v.windows(2) {
                prop_assert!(w[0].1 < w[1].0);
            }
            prop_assert_eq!(r.count_in(probe / 2, probe), m.range(probe / 2..probe).count() as u64);
            prop_assert_eq!(r.min(), m.first().copied());
            prop_assert_eq!(r.remove(probe), m.remove(&probe));
            prop_assert_eq!(r.len(), m.len() as u64);
            prop_assert!(!r.contains(probe));
            r.remove_below(probe);
            prop_assert_eq!(r.len(), m.iter().filter(|&&x| x >= probe).count() as u64);
        }
    }
}
