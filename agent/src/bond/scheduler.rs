//! Which batch goes on which link (sans-IO: inputs and `now` in, send decisions out).
//!
//! - Live first: the newest unsent batch goes first while it is younger than `live_window`;
//!   otherwise the oldest (backfill), so a backlog drains in order behind fresh data.
//! - Each link carries at most `max_in_flight` unacknowledged batches; a new batch goes to the
//!   up link with the fewest in flight.
//! - A batch whose ack is overdue (`ack_timeout`) or whose link went down returns to the unsent
//!   set and is sent again, on any link. The receiver removes the duplicates this may cause.

use crate::codec::BatchId;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SchedulerConfig {
    pub max_in_flight: usize,
    pub live_window_us: u64,
    pub ack_timeout_us: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LinkState {
    Down,
    Up,
}

/// Per-link counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkCounters {
    /// Publishes handed to the link.
    pub sent: u64,
    /// Batches acknowledged by the broker on this link.
    pub acked: u64,
    /// Batches taken back from this link (link down or ack overdue) to be sent again.
    pub moved: u64,
    /// Acks for batches already delivered through another send (a re-send that was not needed).
    pub duplicate_acks: u64,
    pub ups: u64,
    pub downs: u64,
}

#[derive(Debug)]
struct Link {
    state: LinkState,
    in_flight: HashMap<BatchId, u64>,
    counters: LinkCounters,
}

/// A decision: publish batch `id` on link `link`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Send {
    pub link: usize,
    pub id: BatchId,
}

#[derive(Debug)]
pub struct Scheduler {
    cfg: SchedulerConfig,
    links: Vec<Link>,
    /// Batches waiting to be sent.
    unsent: BTreeMap<BatchId, Waiting>,
}

#[derive(Debug, Clone, Copy)]
struct Waiting {
    /// When the batch was queued (0 for backlog and re-sends: they are not live any more).
    created_us: u64,
    /// The link that failed to deliver it last time, avoided when another link has room.
    avoid: Option<usize>,
}

impl Scheduler {
    pub fn new(cfg: SchedulerConfig, links: usize) -> Self {
        Scheduler {
            cfg,
            links: (0..links)
                .map(|_| Link {
                    state: LinkState::Down,
                    in_flight: HashMap::new(),
                    counters: LinkCounters::default(),
                })
                .collect(),
            unsent: BTreeMap::new(),
        }
    }

    /// A new batch to deliver, created at `created_us` (use 0 for backlog found at start-up).
    pub fn add(&mut self, id: BatchId, created_us: u64) {
        self.unsent.insert(
            id,
            Waiting {
                created_us,
                avoid: None,
            },
        );
    }

    /// The batch no longer needs delivering (evicted, or gone from the queue).
    pub fn forget(&mut self, id: BatchId) {
        self.unsent.remove(&id);
        for l in &mut self.links {
            l.in_flight.remove(&id);
        }
    }

    pub fn link_up(&mut self, link: usize) {
        if let Some(l) = self.links.get_mut(link)
            && l.state != LinkState::Up
        {
            l.state = LinkState::Up;
            l.counters.ups += 1;
        }
    }

    /// The link is gone: everything in flight on it is sent again elsewhere.
    pub fn link_down(&mut self, link: usize) {
        let Some(l) = self.links.get_mut(link) else {
            return;
        };
        if l.state == LinkState::Up {
            l.counters.downs += 1;
        }
        l.state = LinkState::Down;
        let moved: Vec<(BatchId, u64)> = l.in_flight.drain().collect();
        l.counters.moved += moved.len() as u64;
        for (id, _) in moved {
            self.unsent.insert(
                id,
                Waiting {
                    created_us: 0,
                    avoid: Some(link),
                },
            );
        }
    }

    /// The broker acknowledged `id` on `link`. Returns true if the batch was still outstanding.
    pub fn acked(&mut self, link: usize, id: BatchId) -> bool {
        let mut outstanding = self.unsent.remove(&id).is_some();
        for l in &mut self.links {
            outstanding |= l.in_flight.remove(&id).is_some();
        }
        if let Some(l) = self.links.get_mut(link) {
            l.counters.acked += 1;
            if !outstanding {
                l.counters.duplicate_acks += 1;
            }
        }
        outstanding
    }

    /// Moves overdue batches back to the unsent set and decides what to send now.
    pub fn poll(&mut self, now_us: u64) -> Vec<Send> {
        for (li, l) in self.links.iter_mut().enumerate() {
            let overdue: Vec<BatchId> = l
                .in_flight
                .iter()
                .filter(|&(_, &sent)| now_us.saturating_sub(sent) >= self.cfg.ack_timeout_us)
                .map(|(id, _)| *id)
                .collect();
            for id in overdue {
                l.in_flight.remove(&id);
                l.counters.moved += 1;
                self.unsent.insert(
                    id,
                    Waiting {
                        created_us: 0,
                        avoid: Some(li),
                    },
                );
            }
        }
        let mut out = Vec::new();
        loop {
            let has_room =
                |l: &Link| l.state == LinkState::Up && l.in_flight.len() < self.cfg.max_in_flight;
            if !self.links.iter().any(has_room) {
                break;
            }
            let newest = self.unsent.last_key_value().map(|(id, w)| (*id, *w));
            let pick = match newest {
                Some((id, w))
                    if w.created_us > 0
                        && now_us.saturating_sub(w.created_us) <= self.cfg.live_window_us =>
                {
                    (id, w)
                }
                _ => match self.unsent.first_key_value() {
                    Some((id, w)) => (*id, *w),
                    None => break,
                },
            };
            let (id, w) = pick;
            let best = |skip: Option<usize>| {
                self.links
                    .iter()
                    .enumerate()
                    .filter(|(i, l)| has_room(l) && Some(*i) != skip)
                    .min_by_key(|(i, l)| (l.in_flight.len(), *i))
                    .map(|(i, _)| i)
            };
            let Some(link) = best(w.avoid).or_else(|| best(None)) else {
                break;
            };
            self.unsent.remove(&id);
            let l = &mut self.links[link];
            l.in_flight.insert(id, now_us);
            l.counters.sent += 1;
            out.push(Send { link, id });
        }
        out
    }

    pub fn unsent(&self) -> usize {
        self.unsent.len()
    }

    pub fn in_flight(&self, link: usize) -> usize {
        self.links.get(link).map_or(0, |l| l.in_flight.len())
    }

    pub fn state(&self, link: usize) -> LinkState {
        self.links.get(link).map_or(LinkState::Down, |l| l.state)
    }

    pub fn counters(&self, link: usize) -> LinkCounters {
        self.links.get(link).map(|l| l.counters).unwrap_or_default()
    }

    /// Nothing unsent and nothing in flight.
    pub fn idle(&self) -> bool {
        self.unsent.is_empty() && self.links.iter().all(|l| l.in_flight.is_empty())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    const CFG: SchedulerConfig = SchedulerConfig {
        max_in_flight: 4,
        live_window_us: 200_000,
        ack_timeout_us: 5_000_000,
    };

    fn id(seq: u64) -> BatchId {
        BatchId { run: 1, seq }
    }

    #[test]
    fn nothing_goes_out_on_a_down_link() {
        let mut s = Scheduler::new(CFG, 2);
        s.add(id(0), 1);
        assert!(s.poll(2).is_empty());
        s.link_up(1);
        assert_eq!(s.poll(3), vec![Send { link: 1, id: id(0) }]);
    }

    #[test]
    fn live_first_then_backfill_oldest_first() {
        let mut s = Scheduler::new(
            SchedulerConfig {
                max_in_flight: 1,
                ..CFG
            },
            1,
        );
        for i in 0..5 {
            s.add(id(i), 0); // backlog
        }
        s.add(id(5), 1_000_000); // fresh
        s.link_up(0);
        let first = s.poll(1_000_100);
        assert_eq!(first, vec![Send { link: 0, id: id(5) }], "live batch first");
        s.acked(0, id(5));
        assert_eq!(s.poll(1_000_200)[0].id, id(0), "then the oldest backlog");
        s.acked(0, id(0));
        s.add(id(6), 5_000_000);
        assert_eq!(
            s.poll(5_000_001)[0].id,
            id(6),
            "a new live batch jumps the backlog"
        );
    }

    #[test]
    fn stripes_over_links_and_respects_in_flight_limit() {
        let mut s = Scheduler::new(CFG, 3);
        for l in 0..3 {
            s.link_up(l);
        }
        for i in 0..20 {
            s.add(id(i), 10);
        }
        let sends = s.poll(10);
        assert_eq!(sends.len(), 12, "3 links × 4 in flight");
        for l in 0..3 {
            assert_eq!(sends.iter().filter(|x| x.link == l).count(), 4);
        }
        assert_eq!(s.unsent(), 8);
    }

    #[test]
    fn link_down_moves_its_batches_to_another_link() {
        let mut s = Scheduler::new(CFG, 2);
        s.link_up(0);
        s.add(id(0), 1);
        assert_eq!(s.poll(1)[0].link, 0);
        s.link_down(0);
        s.link_up(1);
        assert_eq!(s.poll(2), vec![Send { link: 1, id: id(0) }]);
        assert_eq!(s.counters(0).moved, 1);
    }

    #[test]
    fn overdue_ack_resends_and_late_ack_counts_as_duplicate() {
        let mut s = Scheduler::new(CFG, 2);
        s.link_up(0);
        s.add(id(0), 1);
        assert_eq!(s.poll(1)[0].link, 0);
        s.link_up(1);
        let again = s.poll(1 + CFG.ack_timeout_us);
        assert_eq!(again, vec![Send { link: 1, id: id(0) }]);
        assert!(s.acked(1, id(0)));
        assert!(
            !s.acked(0, id(0)),
            "the first send's late ack is a duplicate"
        );
        assert_eq!(s.counters(0).duplicate_acks, 1);
        assert!(s.idle());
    }

    proptest! {
        /// Random link flaps, acks and timeouts: every batch is acked exactly once as
        /// "outstanding", and once the links stay up everything drains.
        #[test]
        fn every_batch_is_delivered(ops in proptest::collection::vec((0u8..6, 0usize..3, 0u64..400_000), 1..300)) {
            let mut s = Scheduler::new(CFG, 3);
            let mut now = 1u64;
            let mut next = 0u64;
            let mut sent: Vec<Send> = Vec::new();
            let mut delivered = BTreeSet::new();
            for (op, link, dt) in ops {
                now += dt;
                match op {
                    0 => { s.add(id(next), now); next += 1; }
                    1 => s.link_up(link),
                    2 => s.link_down(link),
                    3 | 4 => {
                        // Ack the oldest thing sent on `link` (acks may be for stale sends).
                        if let Some(pos) = sent.iter().position(|x| x.link == link) {
                            let x = sent.remove(pos);
                            if s.acked(x.link, x.id) {
                                prop_assert!(delivered.insert(x.id), "delivered twice: {}", x.id);
                            }
                        }
                    }
                    _ => {}
                }
                sent.extend(s.poll(now));
            }
            // Let everything drain on healthy links.
            for l in 0..3 { s.link_up(l); }
            for _ in 0..10_000 {
                now += 1000;
                sent.extend(s.poll(now));
                let Some(x) = sent.pop() else { break };
                if s.acked(x.link, x.id) {
                    prop_assert!(delivered.insert(x.id));
                }
            }
            prop_assert!(s.idle());
            prop_assert_eq!(delivered.len() as u64, next);
        }
    }
}
