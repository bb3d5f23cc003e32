//! Which batch goes on which link (sans-IO: inputs and `now` in, send decisions out).
//!
//! - Live first: the newest unsent batch goes first while it is younger than `live_window`;
//!   otherwise the oldest (backfill), so a backlog drains in order behind fresh data.
//! - Memory stays bounded whatever the backlog: the scheduler only holds live batches (for at
//!   most `live_window`), batches in flight and batches taken back from a link. Everything older
//!   is found through the `backlog` reader passed to [`Scheduler::poll`] (the queue's "oldest
//!   undelivered batch that is neither in flight nor waiting here").
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

    /// Whether `id` is in flight on some link or waiting here: the backlog reader must skip it.
    pub fn holds(&self, id: BatchId) -> bool {
        self.unsent.contains_key(&id) || self.links.iter().any(|l| l.in_flight.contains_key(&id))
    }

    /// Moves overdue batches back to the unsent set, lets live batches older than the live
    /// window fall back to the backlog, and decides what to send now. `backlog(skip)` returns
    /// the oldest undelivered batch for which `skip` is false.
    pub fn poll(
        &mut self,
        now_us: u64,
        mut backlog: impl FnMut(&dyn Fn(BatchId) -> bool) -> Option<BatchId>,
    ) -> Vec<Send> {
        let window = self.cfg.live_window_us;
        self.unsent
            .retain(|_, w| w.created_us == 0 || now_us.saturating_sub(w.created_us) <= window);
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
                _ => {
                    let waiting = self.unsent.first_key_value().map(|(id, w)| (*id, *w));
                    let older = backlog(&|id| self.holds(id))
                        .filter(|b| waiting.is_none_or(|(w, _)| *b < w));
                    match (older, waiting) {
                        (Some(b), _) => (
                            b,
                            Waiting {
                                created_us: 0,
                                avoid: None,
                            },
                        ),
                        (None, Some(w)) => w,
                        (None, None) => break,
                    }
                }
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

    /// Nothing waiting here and nothing in flight (the backlog may still hold batches).
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

    /// No backlog beyond what the scheduler holds.
    fn none(_: &dyn Fn(BatchId) -> bool) -> Option<BatchId> {
        None
    }

    /// A backlog reader over a set of undelivered batches.
    fn from(
        set: &BTreeSet<BatchId>,
    ) -> impl FnMut(&dyn Fn(BatchId) -> bool) -> Option<BatchId> + '_ {
        move |skip| set.iter().find(|x| !skip(**x)).copied()
    }

    #[test]
    fn nothing_goes_out_on_a_down_link() {
        let mut s = Scheduler::new(CFG, 2);
        s.add(id(0), 1);
        assert!(s.poll(2, none).is_empty());
        s.link_up(1);
        assert_eq!(s.poll(3, none), vec![Send { link: 1, id: id(0) }]);
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
        // Backlog found in the queue at start-up: the scheduler does not hold it.
        let mut queue: BTreeSet<BatchId> = (0..5).map(id).collect();
        queue.insert(id(5));
        s.add(id(5), 1_000_000); // fresh
        s.link_up(0);
        let first = s.poll(1_000_100, from(&queue));
        assert_eq!(first, vec![Send { link: 0, id: id(5) }], "live batch first");
        s.acked(0, id(5));
        queue.remove(&id(5));
        assert_eq!(
            s.poll(1_000_200, from(&queue))[0].id,
            id(0),
            "then the oldest backlog"
        );
        s.acked(0, id(0));
        queue.remove(&id(0));
        s.add(id(6), 5_000_000);
        queue.insert(id(6));
        assert_eq!(
            s.poll(5_000_001, from(&queue))[0].id,
            id(6),
            "a new live batch jumps the backlog"
        );
        s.acked(0, id(6));
        queue.remove(&id(6));
        assert_eq!(s.poll(5_000_002, from(&queue))[0].id, id(1));
        assert_eq!(s.unsent(), 0, "backlog is never copied into the scheduler");
    }

    #[test]
    fn an_outage_does_not_grow_memory() {
        let mut s = Scheduler::new(CFG, 3);
        let mut queue = BTreeSet::new();
        // Ten minutes of 100 batches per second with every link down.
        let mut now = 1;
        for i in 0..60_000 {
            now = 1 + i * 10_000;
            s.add(id(i), now);
            queue.insert(id(i));
            assert!(s.poll(now, from(&queue)).is_empty());
            assert!(s.unsent() <= 1 + (CFG.live_window_us / 10_000) as usize);
        }
        s.link_up(0);
        let sends = s.poll(now + 1, from(&queue));
        let ids: Vec<u64> = sends.iter().map(|x| x.id.seq).collect();
        assert_eq!(
            ids,
            vec![59_999, 59_998, 59_997, 59_996],
            "live batches first, newest first"
        );
        for x in &sends {
            s.acked(x.link, x.id);
            queue.remove(&x.id);
        }
        let later = now + CFG.live_window_us + 1;
        let ids: Vec<u64> = s
            .poll(later, from(&queue))
            .iter()
            .map(|x| x.id.seq)
            .collect();
        assert_eq!(ids, vec![0, 1, 2, 3], "then the backlog, oldest first");
        assert_eq!(s.unsent(), 0);
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
        let sends = s.poll(10, none);
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
        assert_eq!(s.poll(1, none)[0].link, 0);
        s.link_down(0);
        s.link_up(1);
        assert_eq!(s.poll(2, none), vec![Send { link: 1, id: id(0) }]);
        assert_eq!(s.counters(0).moved, 1);
    }

    #[test]
    fn overdue_ack_resends_and_late_ack_counts_as_duplicate() {
        let mut s = Scheduler::new(CFG, 2);
        s.link_up(0);
        s.add(id(0), 1);
        assert_eq!(s.poll(1, none)[0].link, 0);
        s.link_up(1);
        let again = s.poll(1 + CFG.ack_timeout_us, none);
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
            // The queue: every batch added and not delivered.
            let mut queue = BTreeSet::new();
            for (op, link, dt) in ops {
                now += dt;
                match op {
                    0 => { s.add(id(next), now); queue.insert(id(next)); next += 1; }
                    1 => s.link_up(link),
                    2 => s.link_down(link),
                    3 | 4 => {
                        // Ack the oldest thing sent on `link` (acks may be for stale sends).
                        if let Some(pos) = sent.iter().position(|x| x.link == link) {
                            let x = sent.remove(pos);
                            if s.acked(x.link, x.id) {
                                prop_assert!(delivered.insert(x.id), "delivered twice: {}", x.id);
                            }
                            queue.remove(&x.id);
                        }
                    }
                    _ => {}
                }
                sent.extend(s.poll(now, from(&queue)));
                // Bounded: live batches of one window, plus what links gave back.
                prop_assert!(s.unsent() <= next as usize);
            }
            // Let everything drain on healthy links.
            for l in 0..3 { s.link_up(l); }
            for _ in 0..10_000 {
                now += 1000;
                sent.extend(s.poll(now, from(&queue)));
                let Some(x) = sent.pop() else { break };
                if s.acked(x.link, x.id) {
                    prop_assert!(delivered.insert(x.id));
                }
                queue.remove(&x.id);
            }
            prop_assert!(s.idle());
            prop_assert!(queue.is_empty());
            prop_assert_eq!(delivered.len() as u64, next);
        }
    }
}
