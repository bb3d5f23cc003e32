//! The batcher: groups one source's readings into time windows (sans-IO).
//!
//! A batch opens with its first sample and closes `window` later (by the agent's clock, `now`),
//! or as soon as it holds `max_samples`. Batches are the unit of storage, transport,
//! acknowledgement and deduplication.

/// Groups items (readings, in the agent) into batches by time window and size.
#[derive(Debug)]
pub struct Batcher<T> {
    window_us: u64,
    max_samples: usize,
    open: Vec<T>,
    opened_at_us: u64,
}

impl<T: Clone> Batcher<T> {
    pub fn new(window_us: u64, max_samples: usize) -> Self {
        Batcher {
            window_us: window_us.max(1),
            max_samples: max_samples.max(1),
            open: Vec::new(),
            opened_at_us: 0,
        }
    }

    /// Adds samples received at `now_us`; returns every batch that filled up.
    pub fn push(&mut self, samples: &[T], now_us: u64) -> Vec<Vec<T>> {
        let mut closed = Vec::new();
        let mut rest = samples;
        while !rest.is_empty() {
            if self.open.is_empty() {
                self.opened_at_us = now_us;
                self.open
                    .reserve(self.max_samples.min(rest.len().max(1024)));
            }
            let room = self.max_samples - self.open.len();
            let take = room.min(rest.len());
            self.open.extend_from_slice(&rest[..take]);
            rest = &rest[take..];
            if self.open.len() >= self.max_samples {
                closed.push(std::mem::take(&mut self.open));
            }
        }
        closed
    }

    /// Closes the open batch if its window has passed at `now_us`.
    pub fn poll(&mut self, now_us: u64) -> Option<Vec<T>> {
        match self.deadline_us() {
            Some(d) if now_us >= d => Some(std::mem::take(&mut self.open)),
            _ => None,
        }
    }

    /// Closes the open batch whatever its age (shutdown).
    pub fn flush(&mut self) -> Option<Vec<T>> {
        (!self.open.is_empty()).then(|| std::mem::take(&mut self.open))
    }

    /// When the open batch will close, if one is open.
    pub fn deadline_us(&self) -> Option<u64> {
        (!self.open.is_empty()).then(|| self.opened_at_us + self.window_us)
    }

    pub fn pending(&self) -> usize {
        self.open.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use sensor_drivers::Sample;

    fn s(t: u64) -> Sample {
        Sample {
            t_us: t,
            channel: 0,
            value: t as f64,
        }
    }

    #[test]
    fn closes_on_window() {
        let mut b = Batcher::new(100_000, 1000);
        assert!(b.push(&[s(1), s(2)], 1_000).is_empty());
        assert_eq!(b.deadline_us(), Some(101_000));
        assert!(b.poll(100_999).is_none());
        assert!(b.push(&[s(3)], 50_000).is_empty());
        let batch = b.poll(101_000).expect("window passed");
        assert_eq!(batch.len(), 3);
        assert!(b.poll(1_000_000).is_none(), "nothing open");
        assert_eq!(b.deadline_us(), None);
    }

    #[test]
    fn closes_on_size() {
        let mut b = Batcher::new(100_000, 2);
        let closed = b.push(&[s(1), s(2), s(3), s(4), s(5)], 0);
        assert_eq!(closed.len(), 2);
        assert_eq!(b.pending(), 1);
        assert_eq!(b.flush().map(|v| v.len()), Some(1));
    }

    proptest! {
        /// Nothing is lost, duplicated or reordered, and no batch exceeds max_samples.
        #[test]
        fn conserves_samples(chunks in proptest::collection::vec((0usize..50, 0u64..80_000), 0..60), max in 1usize..40) {
            let mut b = Batcher::new(50_000, max);
            let mut now = 0;
            let mut next = 0u64;
            let mut out = Vec::new();
            for (n, dt) in chunks {
                now += dt;
                if let Some(x) = b.poll(now) { out.push(x); }
                let chunk: Vec<Sample> = (next..next + n as u64).map(s).collect();
                next += n as u64;
                out.extend(b.push(&chunk, now));
            }
            out.extend(b.flush());
            prop_assert!(out.iter().all(|v| !v.is_empty() && v.len() <= max));
            let flat: Vec<u64> = out.into_iter().flatten().map(|x| x.t_us).collect();
            prop_assert_eq!(flat, (0..next).collect::<Vec<_>>());
        }
    }
}
