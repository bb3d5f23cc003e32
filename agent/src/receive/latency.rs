//! A small log-linear latency histogram (sans-IO).
//!
//! Fixed memory (a few KiB per vehicle) whatever the run length, about 3 % relative error,
//! exact below 32 µs. Enough for p50/p99 in a summary without pulling in hdrhistogram.

/// Sub-buckets per power of two, as bits: 2^5 = 32 gives at most 1/32 relative bucket width.
const SUB_BITS: u32 = 5;
const SUB: u64 = 1 << SUB_BITS;
/// Buckets needed to cover all of u64.
const BUCKETS: usize = ((64 - SUB_BITS as usize) + 1) << SUB_BITS;

#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct LatencyHistogram {
    /// Empty until the first record, so vehicles without data batches cost nothing.
    counts: Vec<u64>,
    total: u64,
    max_us: u64,
}

fn index(v: u64) -> usize {
    if v < SUB {
        return v as usize;
    }
    let msb = 63 - v.leading_zeros();
    let shift = msb - SUB_BITS;
    let sub = (v >> shift) & (SUB - 1);
    (((shift + 1) as usize) << SUB_BITS) + sub as usize
}

/// Midpoint of bucket `i`, in µs.
fn value_of(i: usize) -> f64 {
    let i = i as u64;
    if i < SUB {
        return i as f64;
    }
    let shift = (i >> SUB_BITS) - 1;
    let low = (SUB + (i & (SUB - 1))) << shift;
    let width = 1u64 << shift;
    low as f64 + (width - 1) as f64 / 2.0
}

impl LatencyHistogram {
    pub fn record(&mut self, us: u64) {
        if self.counts.is_empty() {
            self.counts = vec![0; BUCKETS];
        }
        self.counts[index(us)] += 1;
        self.total += 1;
        self.max_us = self.max_us.max(us);
    }

    pub fn count(&self) -> u64 {
        self.total
    }

    pub fn max_us(&self) -> Option<u64> {
        (self.total > 0).then_some(self.max_us)
    }

    /// The `q`-quantile (0.0..=1.0) in µs, or None when nothing was recorded.
    pub fn quantile_us(&self, q: f64) -> Option<f64> {
        if self.total == 0 {
            return None;
        }
        let rank = ((q.clamp(0.0, 1.0) * self.total as f64).ceil() as u64).clamp(1, self.total);
        let mut seen = 0;
        for (i, &c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                // Never report more than what was actually measured.
                return Some(value_of(i).min(self.max_us as f64));
            }
        }
        Some(self.max_us as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn buckets_are_contiguous_and_cover_u64() {
        assert_eq!(index(0), 0);
        assert_eq!(index(31), 31);
        assert_eq!(index(32), 32);
        assert_eq!(index(63), 63);
        assert_eq!(index(64), 64);
        assert_eq!(index(65), 64);
        assert_eq!(index(66), 65);
        assert_eq!(index(u64::MAX), BUCKETS - 1);
        let h = LatencyHistogram::default();
        assert_eq!(h.quantile_us(0.5), None);
        assert_eq!(h.max_us(), None);
    }

    #[test]
    fn percentiles_of_a_known_distribution() {
        let mut h = LatencyHistogram::default();
        for v in 1..=1000u64 {
            h.record(v * 1000);
        }
        let p50 = h.quantile_us(0.5).unwrap_or(0.0);
        let p99 = h.quantile_us(0.99).unwrap_or(0.0);
        assert!((p50 - 500_000.0).abs() / 500_000.0 < 0.04, "p50 {p50}");
        assert!((p99 - 990_000.0).abs() / 990_000.0 < 0.04, "p99 {p99}");
        assert_eq!(h.quantile_us(1.0), Some(1_000_000.0));
        assert_eq!(h.count(), 1000);
    }

    proptest! {
        /// Every value lands in a bucket whose midpoint is within 1/32 of it.
        #[test]
        fn bucket_error_is_bounded(v in any::<u64>()) {
            let i = index(v);
            prop_assert!(i < BUCKETS);
            let mid = value_of(i);
            prop_assert!((mid - v as f64).abs() <= v as f64 / 32.0 + 0.5, "{} -> {}", v, mid);
        }

        #[test]
        fn quantile_matches_sorted_values(mut vals in proptest::collection::vec(0u64..10_000_000, 1..300), q in 0.0f64..=1.0) {
            let mut h = LatencyHistogram::default();
            for &v in &vals { h.record(v); }
            vals.sort_unstable();
            let rank = ((q * vals.len() as f64).ceil() as usize).clamp(1, vals.len());
            let exact = vals[rank - 1] as f64;
            let got = h.quantile_us(q).unwrap_or(-1.0);
            prop_assert!((got - exact).abs() <= exact / 32.0 + 0.5, "q {} exact {} got {}", q, exact, got);
        }
    }
}
