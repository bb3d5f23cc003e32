#![allow(clippy::unwrap_used)]

use super::*;
use proptest::prelude::*;
use std::collections::BTreeSet;

/// Defaults with a small in-flight cap and no heartbeats (heartbeat tests turn them on).
const CFG: SchedulerConfig = SchedulerConfig {
    max_in_flight: 4,
    live_window_us: 200_000,
    initial_rto_us: 1_000_000,
    min_rto_us: 150_000,
    max_rto_us: 3_000_000,
    initial_rtt_us: 100_000,
    initial_goodput: 250_000.0,
    bdp_factor: 2.0,
    min_window_bytes: 64 << 10,
    min_window_batches: 2,
    heartbeat_idle_us: 0,
    backlog_batch_bytes: 1000,
};

const KB: u64 = 1000;

fn id(seq: u64) -> BatchId {
    BatchId { run: 1, seq }
}

fn send(link: usize, seq: u64) -> Action {
    Action::Send { link, id: id(seq) }
}

/// No backlog beyond what the scheduler holds.
fn none(_: &dyn Fn(BatchId) -> bool) -> Option<BatchId> {
    None
}

/// A backlog reader over a set of undelivered batches.
fn from(set: &BTreeSet<BatchId>) -> impl FnMut(&dyn Fn(BatchId) -> bool) -> Option<BatchId> + '_ {
    move |skip| set.iter().find(|x| !skip(**x)).copied()
}

fn sends(actions: &[Action]) -> Vec<(usize, BatchId)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Send { link, id } => Some((*link, *id)),
            Action::Heartbeat { .. } => None,
        })
        .collect()
}

/// Sets a link's estimates as if measured.
fn measured(s: &mut Scheduler, link: usize, srtt_us: u64, goodput: f64) {
    let l = &mut s.links[link];
    l.srtt_us = Some(srtt_us);
    l.rttvar_us = srtt_us / 4;
    l.min_rtt = Some((srtt_us, 0));
    l.goodput = Some(goodput);
}

#[test]
fn nothing_goes_out_on_a_down_link() {
    let mut s = Scheduler::new(CFG, 2);
    s.add(id(0), 1, KB, false);
    assert!(s.poll(2, none).is_empty());
    s.link_up(1);
    assert_eq!(s.poll(3, none), vec![send(1, 0)]);
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
    s.add(id(5), 1_000_000, KB, false); // fresh
    s.link_up(0);
    let first = s.poll(1_000_100, from(&queue));
    assert_eq!(first, vec![send(0, 5)], "live batch first");
    s.acked(0, id(5), 1_000_150);
    queue.remove(&id(5));
    assert_eq!(
        s.poll(1_000_200, from(&queue)),
        vec![send(0, 0)],
        "then the oldest backlog"
    );
    s.acked(0, id(0), 1_000_250);
    queue.remove(&id(0));
    s.add(id(6), 5_000_000, KB, false);
    queue.insert(id(6));
    assert_eq!(
        s.poll(5_000_001, from(&queue)),
        vec![send(0, 6)],
        "a new live batch jumps the backlog"
    );
    s.acked(0, id(6), 5_000_050);
    queue.remove(&id(6));
    assert_eq!(s.poll(5_000_060, from(&queue)), vec![send(0, 1)]);
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
        s.add(id(i), now, KB, false);
        queue.insert(id(i));
        assert!(s.poll(now, from(&queue)).is_empty());
        assert!(s.unsent() <= 1 + (CFG.live_window_us / 10_000) as usize);
    }
    s.link_up(0);
    let out = s.poll(now + 1, from(&queue));
    let ids: Vec<u64> = sends(&out).iter().map(|x| x.1.seq).collect();
    assert_eq!(
        ids,
        vec![59_999, 59_998, 59_997, 59_996],
        "live batches first, newest first"
    );
    for (l, x) in sends(&out) {
        s.acked(l, x, now + 50_000);
        queue.remove(&x);
    }
    let later = now + CFG.live_window_us + 1;
    let ids: Vec<u64> = sends(&s.poll(later, from(&queue)))
        .iter()
        .map(|x| x.1.seq)
        .collect();
    assert_eq!(ids, vec![0, 1, 2, 3], "then the backlog, oldest first");
    assert_eq!(s.unsent(), 0);
}

#[test]
fn equal_links_share_and_respect_the_in_flight_cap() {
    let mut s = Scheduler::new(CFG, 3);
    for l in 0..3 {
        s.link_up(l);
    }
    for i in 0..20 {
        s.add(id(i), 10, KB, false);
    }
    let out = s.poll(10, none);
    assert_eq!(out.len(), 12, "3 links × 4 in flight");
    for l in 0..3 {
        assert_eq!(out.iter().filter(|x| sends(&[**x])[0].0 == l).count(), 4);
        assert_eq!(s.bytes_in_flight(l), 4 * KB);
    }
    assert_eq!(s.unsent(), 8);
}

#[test]
fn the_bytes_in_flight_limit_follows_goodput_and_rtt() {
    let mut s = Scheduler::new(
        SchedulerConfig {
            max_in_flight: 100,
            ..CFG
        },
        1,
    );
    s.link_up(0);
    // 1 MB/s × 100 ms × 2 = 200 kB.
    measured(&mut s, 0, 100_000, 1e6);
    assert_eq!(s.window_bytes(0), 200_000);
    for i in 0..50 {
        s.add(id(i), 10, 20 * KB, false);
    }
    let n = s.poll(10, none).len();
    assert_eq!(n, 10, "10 × 20 kB fill 200 kB");
    // A fresh link starts with the floor.
    let mut fresh = Scheduler::new(CFG, 1);
    fresh.link_up(0);
    assert_eq!(
        fresh.window_bytes(0),
        64 << 10,
        "250 kB/s × 100 ms × 2 is below the floor"
    );
    let mut tiny = Scheduler::new(CFG, 1);
    tiny.link_up(0);
    measured(&mut tiny, 0, 10_000, 10_000.0);
    assert_eq!(tiny.window_bytes(0), 64 << 10, "floored");
    for i in 0..3 {
        tiny.add(id(i), 10, 100 * KB, false);
    }
    assert_eq!(
        tiny.poll(10, none).len(),
        2,
        "two batches always fit, whatever their size"
    );
}

#[test]
fn earliest_completion_picks_the_fast_link_and_waits_for_it() {
    let mut s = Scheduler::new(
        SchedulerConfig {
            max_in_flight: 100,
            ..CFG
        },
        2,
    );
    s.link_up(0);
    s.link_up(1);
    // Link 0: 10 MB/s, 20 ms. Link 1: 100 kB/s, 200 ms.
    measured(&mut s, 0, 20_000, 10e6);
    measured(&mut s, 1, 200_000, 100e3);
    s.add(id(0), 10, 10 * KB, false);
    assert_eq!(s.poll(10, none), vec![send(0, 0)], "the fast link");
    // Fill the fast link to its limit (10 MB/s × 20 ms × 2 = 400 kB) minus a little: a
    // batch on it completes in about 40 ms + 10 ms, on the slow link in 100 ms + 100 ms.
    s.links[0].bytes_in_flight = 390 * KB;
    s.add(id(1), 20, 20 * KB, false);
    assert_eq!(s.poll(20, none), vec![send(0, 1)]);
    assert!(!s.links[0].has_room(&s.cfg));
    // Now the fast link is full, but waiting for it still finishes earlier: nothing is sent.
    s.add(id(2), 30, 20 * KB, false);
    assert!(s.poll(30, none).is_empty(), "the slow link is skipped");
    // A fast link with a queue of 3 s: the slow link completes first and takes the batch.
    s.links[0].bytes_in_flight = 30_000 * KB;
    assert_eq!(s.poll(40, none), vec![send(1, 2)]);
}

#[test]
fn rto_follows_rfc6298_with_floor_cap_and_backoff() {
    let mut s = Scheduler::new(CFG, 1);
    assert_eq!(s.rto_us(0), CFG.initial_rto_us, "before any sample");
    s.link_up(0);
    s.add(id(0), 1, KB, false);
    s.poll(0, none);
    s.acked(0, id(0), 100_000);
    assert_eq!(s.srtt_us(0), Some(100_000));
    assert_eq!(s.rttvar_us(0), Some(50_000));
    assert_eq!(s.rto_us(0), 300_000);
    s.add(id(1), 200_000, KB, false);
    s.poll(200_000, none);
    s.acked(0, id(1), 400_000);
    // rttvar = (3·50 + |100 − 200|) / 4 = 62.5 ms; srtt = (7·100 + 200) / 8 = 112.5 ms.
    assert_eq!(s.rttvar_us(0), Some(62_500));
    assert_eq!(s.srtt_us(0), Some(112_500));
    assert_eq!(s.rto_us(0), 112_500 + 4 * 62_500);
    // Tiny RTTs: floored.
    let mut f = Scheduler::new(CFG, 1);
    f.links[0].rtt_sample(2_000, 0);
    assert_eq!(f.rto_us(0), CFG.min_rto_us);
    // Huge RTTs: capped.
    f.links[0].rtt_sample(10_000_000, 0);
    assert_eq!(f.rto_us(0), CFG.max_rto_us);
    // A timeout doubles the RTO until the next sample.
    let mut b = Scheduler::new(CFG, 1);
    b.link_up(0);
    b.links[0].rtt_sample(100_000, 0);
    b.add(id(0), 1, KB, false);
    b.poll(0, none);
    // Due one RTO after the link could carry the batch (1 KB at the initial goodput: 4 ms).
    b.poll(303_000, none);
    assert_eq!(
        b.state(0),
        LinkState::Up,
        "not overdue before it could be carried"
    );
    b.poll(304_000, none);
    assert_eq!(b.state(0), LinkState::Suspect);
    assert_eq!(b.rto_us(0), 600_000);
    // Karn: the batch went back to the same link; its ack may answer either send.
    let again = b.poll(304_001, none);
    assert!(again.is_empty(), "a suspect link takes nothing");
    b.heartbeat_acked(0, 99, 304_002); // not a heartbeat of ours, but the link is alive
    assert_eq!(b.state(0), LinkState::Up);
    assert_eq!(b.rto_us(0), 600_000, "no sample from an unknown heartbeat");
    assert_eq!(b.poll(304_003, none), vec![send(0, 0)]);
    b.acked(0, id(0), 320_000);
    assert_eq!(b.srtt_us(0), Some(100_000), "ambiguous ack: no sample");
    assert_eq!(b.rto_us(0), 600_000);
}

#[test]
fn a_late_ack_of_a_moved_batch_is_a_duplicate_and_no_sample() {
    let mut s = Scheduler::new(CFG, 2);
    s.link_up(0);
    s.link_up(1);
    s.links[0].rtt_sample(100_000, 0);
    s.links[1].rtt_sample(100_000, 0);
    s.add(id(0), 1, KB, false);
    assert_eq!(s.poll(1, none), vec![send(0, 0)]);
    // Overdue past RTO 300 ms (+ 4 ms to carry 1 KB): the link turns suspect and the batch
    // moves at once.
    assert_eq!(s.poll(304_001, none), vec![send(1, 0)]);
    assert_eq!(s.state(0), LinkState::Suspect);
    assert_eq!(s.counters(0).moved, 1);
    assert_eq!(s.counters(0).suspects, 1);
    assert!(s.acked(1, id(0), 350_000));
    assert!(!s.acked(0, id(0), 500_001), "the first send's late ack");
    assert_eq!(s.counters(0).duplicate_acks, 1);
    assert_eq!(s.state(0), LinkState::Up, "an ack brings it back");
    // Karn: the late ack measures the stall, not the path; stalls in a row would otherwise
    // keep raising the RTO and with it every later failover.
    assert_eq!(s.srtt_us(0), Some(100_000));
    assert!(s.idle());
}

#[test]
fn link_down_moves_its_batches_to_another_link() {
    let mut s = Scheduler::new(CFG, 2);
    s.link_up(0);
    s.add(id(0), 1, KB, false);
    assert_eq!(s.poll(1, none)[0], send(0, 0));
    s.link_down(0);
    s.link_up(1);
    assert_eq!(s.poll(2, none), vec![send(1, 0)]);
    assert_eq!(s.counters(0).moved, 1);
    assert_eq!(s.counters(0).downs, 1);
}

#[test]
fn moved_batches_go_before_live_and_backlog() {
    let mut s = Scheduler::new(
        SchedulerConfig {
            max_in_flight: 1,
            ..CFG
        },
        2,
    );
    s.link_up(0);
    s.add(id(3), 1, KB, false);
    assert_eq!(s.poll(1, none), vec![send(0, 3)]);
    s.link_down(0);
    s.add(id(4), 2, KB, false);
    s.link_up(1);
    let queue: BTreeSet<BatchId> = (0..5).map(id).collect();
    assert_eq!(s.poll(3, from(&queue)), vec![send(1, 3)]);
}

#[test]
fn an_unacked_heartbeat_makes_the_link_suspect_and_an_ack_brings_it_back() {
    let cfg = SchedulerConfig {
        heartbeat_idle_us: 150_000,
        ..CFG
    };
    let mut s = Scheduler::new(cfg, 2);
    s.link_up(0);
    s.link_up(1);
    let hb = s.poll(0, none);
    assert_eq!(
        hb,
        vec![
            Action::Heartbeat { link: 0, seq: 0 },
            Action::Heartbeat { link: 1, seq: 1 }
        ],
        "a fresh link is probed at once"
    );
    s.heartbeat_acked(1, 1, 40_000);
    assert_eq!(s.srtt_us(1), Some(40_000));
    // Link 0 never answers: suspect after the initial RTO.
    assert!(
        s.poll(999_999, none)
            .iter()
            .all(|a| !matches!(a, Action::Heartbeat { link: 0, .. }))
    );
    assert_eq!(s.state(0), LinkState::Up);
    let out = s.poll(1_000_000, none);
    assert_eq!(s.state(0), LinkState::Suspect);
    assert_eq!(s.counters(0).heartbeats_lost, 1);
    assert!(
        out.contains(&Action::Heartbeat { link: 0, seq: 3 }),
        "a suspect link is probed again: {out:?}"
    );
    // No batch goes to the suspect link, even though it is "first".
    s.add(id(0), 1_000_001, KB, false);
    assert_eq!(sends(&s.poll(1_000_001, none)), vec![(1, id(0))]);
    s.heartbeat_acked(0, 3, 1_050_000);
    assert_eq!(s.state(0), LinkState::Up);
    assert_eq!(s.srtt_us(0), Some(50_000));
    assert_eq!(s.counters(0).heartbeats_sent, 2);
    assert_eq!(s.counters(0).heartbeats_acked, 1);
}

#[test]
fn heartbeats_go_only_on_idle_links() {
    let cfg = SchedulerConfig {
        heartbeat_idle_us: 150_000,
        ..CFG
    };
    let mut s = Scheduler::new(cfg, 2);
    s.link_up(0);
    s.link_up(1);
    for l in 0..2 {
        s.links[l].rtt_sample(20_000, 0);
    }
    s.add(id(0), 1, KB, false);
    let out = s.poll(1, none);
    // Link 0 carries the batch; link 1 is idle: one heartbeat, on link 1.
    assert_eq!(out, vec![send(0, 0), Action::Heartbeat { link: 1, seq: 0 }]);
    s.acked(0, id(0), 20_000);
    s.heartbeat_acked(1, 0, 20_000);
    assert!(
        s.poll(150_000, none).is_empty(),
        "link 0 sent at 1 µs, link 1 probed at 1 µs: not idle long enough"
    );
    let out = s.poll(150_001, none);
    assert_eq!(
        out,
        vec![
            Action::Heartbeat { link: 0, seq: 1 },
            Action::Heartbeat { link: 1, seq: 2 }
        ]
    );
    assert!(
        s.poll(290_000, none).is_empty(),
        "one heartbeat in flight per link"
    );
    // A down link is not probed.
    s.link_down(0);
    s.heartbeat_acked(1, 2, 290_001);
    let out = s.poll(500_000, none);
    assert_eq!(out, vec![Action::Heartbeat { link: 1, seq: 3 }]);
    // With heartbeats off, nothing.
    let mut off = Scheduler::new(CFG, 1);
    off.link_up(0);
    assert!(off.poll(10_000_000, none).is_empty());
}

#[test]
fn an_unusable_link_is_drained_while_another_is_up() {
    let mut s = Scheduler::new(CFG, 2);
    s.link_up(0);
    s.link_up(1);
    measured(&mut s, 0, 20_000, 10e6);
    measured(&mut s, 1, 100_000, 1e6);
    s.add(id(0), 1, KB, false);
    assert_eq!(s.poll(1, none), vec![send(0, 0)], "link 0 is the faster");
    s.radio(0, RadioBand::Unusable);
    s.add(id(1), 2, KB, false);
    assert_eq!(s.poll(2, none), vec![send(1, 1)], "link 0 is being drained");
    assert_eq!(s.in_flight(0), 1, "what it carries may complete");
    assert!(s.acked(0, id(0), 20_000));
    // Alone, an unusable link still carries (better than nothing).
    s.link_down(1);
    s.add(id(2), 30_000, KB, false);
    let out = s.poll(30_000, none);
    assert_eq!(sends(&out), vec![(0, id(1)), (0, id(2))]);
}

#[test]
fn critical_batches_are_duplicated_only_while_the_best_link_is_poor() {
    let mut s = Scheduler::new(CFG, 3);
    for l in 0..3 {
        s.link_up(l);
    }
    s.radio(0, RadioBand::Good);
    s.radio(1, RadioBand::Fair);
    s.radio(2, RadioBand::Poor);
    s.add(id(0), 1, KB, true);
    s.add(id(1), 1, KB, false);
    assert_eq!(
        sends(&s.poll(1, none)).len(),
        2,
        "best link Good: no copies"
    );
    s.radio(0, RadioBand::Poor);
    s.radio(1, RadioBand::Poor);
    s.add(id(2), 2, KB, true);
    let out = sends(&s.poll(2, none));
    assert_eq!(out.len(), 2, "one batch on the two best links: {out:?}");
    assert!(out.iter().all(|x| x.1 == id(2)));
    assert_ne!(out[0].0, out[1].0);
    let dups: u64 = (0..3).map(|l| s.counters(l).duplicated).sum();
    assert_eq!(dups, 1);
    s.add(id(3), 3, KB, false);
    assert_eq!(sends(&s.poll(3, none)).len(), 1, "not critical: one copy");
    // The first ack delivers it; the copy's ack is a duplicate; nothing moves.
    assert!(s.acked(out[1].0, id(2), 30_000));
    assert!(!s.acked(out[0].0, id(2), 31_000));
    // A suspect best link also makes critical batches go twice.
    let mut s = Scheduler::new(CFG, 3);
    for l in 0..3 {
        s.link_up(l);
    }
    s.radio(0, RadioBand::Excellent);
    s.radio(1, RadioBand::Good);
    s.radio(2, RadioBand::Good);
    s.links[0].heartbeat = Some((77, 0));
    s.poll(1_000_000, none);
    assert_eq!(s.state(0), LinkState::Suspect);
    s.add(id(4), 1_000_001, KB, true);
    let out = sends(&s.poll(1_000_001, none));
    assert_eq!(out.len(), 2, "{out:?}");
}

#[test]
fn a_copy_still_in_flight_is_not_moved_again() {
    let mut s = Scheduler::new(CFG, 2);
    s.link_up(0);
    s.link_up(1);
    s.radio(0, RadioBand::Poor);
    s.radio(1, RadioBand::Poor);
    s.add(id(0), 1, KB, true);
    assert_eq!(s.poll(1, none).len(), 2);
    s.link_down(0);
    assert_eq!(s.counters(0).moved, 0, "link 1 still carries it");
    assert!(s.poll(2, none).is_empty());
    assert!(s.acked(1, id(0), 50_000));
    assert!(s.idle());
}

#[test]
fn goodput_follows_the_delivery_rate() {
    let mut s = Scheduler::new(
        SchedulerConfig {
            max_in_flight: 100,
            min_window_bytes: 1_000_000,
            ..CFG
        },
        1,
    );
    s.link_up(0);
    for i in 0..10 {
        s.add(id(i), 1, 10 * KB, false);
    }
    assert_eq!(s.poll(0, none).len(), 10);
    // One batch every 10 ms after a 50 ms RTT: 10 kB per 10 ms = 1 MB/s.
    for i in 0..10 {
        s.acked(0, id(i), 50_000 + i * 10_000);
    }
    let g = s.goodput(0).expect("sampled");
    assert!(g > 150e3 && g < 1.1e6, "{g}");
    // Keep the pipe full for a while: the estimate converges near 1 MB/s.
    let mut now = 140_000;
    for next in 10..210 {
        s.add(id(next), now, 10 * KB, false);
        s.poll(now, none);
        now += 10_000;
        let oldest = *s.links[0]
            .in_flight
            .iter()
            .min_by_key(|(_, f)| f.sent_us)
            .expect("in flight")
            .0;
        s.acked(0, oldest, now);
    }
    let g = s.goodput(0).expect("sampled");
    assert!((0.8e6..1.2e6).contains(&g), "{g}");
}

#[test]
fn lte_bands_follow_radio_md_as_the_scheduler_uses_them() {
    let b = |p, q, s| RadioBand::lte(Some(p), Some(q), Some(s));
    assert_eq!(b(-80.0, -8.0, 20.0), Some(RadioBand::Excellent));
    assert_eq!(b(-85.0, -10.0, 13.0), Some(RadioBand::Excellent), "edges");
    assert_eq!(b(-85.1, -8.0, 20.0), Some(RadioBand::Good));
    assert_eq!(b(-100.0, -8.0, 20.0), Some(RadioBand::Fair));
    assert_eq!(b(-110.0, -8.0, 20.0), Some(RadioBand::Poor));
    assert_eq!(b(-116.0, -8.0, 20.0), Some(RadioBand::Unusable));
    assert_eq!(b(-80.0, -12.0, 20.0), Some(RadioBand::Good), "RSRQ");
    assert_eq!(b(-80.0, -19.5, 20.0), Some(RadioBand::Unusable), "RSRQ");
    assert_eq!(b(-80.0, -8.0, 4.9), Some(RadioBand::Fair), "SINR");
    assert_eq!(b(-80.0, -8.0, -1.0), Some(RadioBand::Poor), "SINR");
    assert_eq!(b(-80.0, -8.0, -3.5), Some(RadioBand::Unusable), "SINR");
    assert_eq!(
        RadioBand::lte(None, None, Some(6.0)),
        Some(RadioBand::Good),
        "missing metrics are ignored"
    );
    assert_eq!(
        RadioBand::lte(Some(f64::NAN), None, Some(-1.0)),
        Some(RadioBand::Poor)
    );
    assert_eq!(RadioBand::lte(None, Some(f64::INFINITY), None), None);
    assert!(RadioBand::Unusable < RadioBand::Poor && RadioBand::Good < RadioBand::Excellent);
}

proptest! {
    /// Random link flaps, acks and timeouts: every batch is acked exactly once as
    /// "outstanding", and once the links stay up everything drains.
    #[test]
    fn every_batch_is_delivered(ops in proptest::collection::vec((0u8..7, 0usize..3, 0u64..400_000), 1..300)) {
        let mut s = Scheduler::new(SchedulerConfig { heartbeat_idle_us: 150_000, ..CFG }, 3);
        let mut now = 1u64;
        let mut next = 0u64;
        let mut sent: Vec<Action> = Vec::new();
        let mut delivered = BTreeSet::new();
        // The queue: every batch added and not delivered.
        let mut queue = BTreeSet::new();
        for (op, link, dt) in ops {
            now += dt;
            match op {
                0 => { s.add(id(next), now, 1000 + dt % 20_000, dt % 3 == 0); queue.insert(id(next)); next += 1; }
                1 => s.link_up(link),
                2 => s.link_down(link),
                3 | 4 => {
                    // Ack the oldest thing sent on `link` (acks may be for stale sends).
                    if let Some(pos) = sent.iter().position(|x| matches!(x, Action::Send { link: l, .. } | Action::Heartbeat { link: l, .. } if *l == link)) {
                        match sent.remove(pos) {
                            Action::Send { link, id } => {
                                if s.acked(link, id, now) {
                                    prop_assert!(delivered.insert(id), "delivered twice: {}", id);
                                }
                                queue.remove(&id);
                            }
                            Action::Heartbeat { link, seq } => s.heartbeat_acked(link, seq, now),
                        }
                    }
                }
                5 => s.radio(link, [RadioBand::Unusable, RadioBand::Poor, RadioBand::Good][(dt % 3) as usize]),
                _ => {}
            }
            sent.extend(s.poll(now, from(&queue)));
            // Bounded: what was added, no more.
            prop_assert!(s.unsent() <= next as usize);
            for l in 0..3 {
                prop_assert!(s.in_flight(l) <= CFG.max_in_flight);
            }
        }
        // Let everything drain on healthy links.
        for l in 0..3 { s.link_up(l); }
        for _ in 0..100_000 {
            now += 1000;
            sent.extend(s.poll(now, from(&queue)));
            let Some(x) = sent.pop() else { continue };
            match x {
                Action::Send { link, id } => {
                    if s.acked(link, id, now) {
                        prop_assert!(delivered.insert(id));
                    }
                    queue.remove(&id);
                }
                Action::Heartbeat { link, seq } => s.heartbeat_acked(link, seq, now),
            }
            if queue.is_empty() && s.idle() {
                break;
            }
        }
        prop_assert!(s.idle());
        prop_assert!(queue.is_empty());
        prop_assert_eq!(delivered.len() as u64, next);
    }
}

#[test]
fn the_limit_uses_the_minimum_rtt_not_the_queue() {
    let mut s = Scheduler::new(CFG, 1);
    s.link_up(0);
    s.links[0].goodput = Some(1e6);
    s.links[0].rtt_sample(50_000, 0);
    // The link's own queue makes later acks slower; the limit must not chase it.
    for i in 1..20 {
        s.links[0].rtt_sample(400_000, i * 100_000);
    }
    assert!(s.srtt_us(0).expect("sampled") > 300_000);
    assert_eq!(s.window_bytes(0), 100_000, "1 MB/s × 50 ms × 2");
    // Ten seconds on, the old minimum gives way.
    s.links[0].rtt_sample(80_000, 11_000_000);
    assert_eq!(s.window_bytes(0), 160_000);
}

#[test]
fn one_small_batch_does_not_make_a_fresh_link_look_slow() {
    let mut s = Scheduler::new(CFG, 2);
    s.link_up(0);
    s.link_up(1);
    // A 2 kB batch acked after 200 ms: 10 kB/s "delivered", but the link was nearly idle.
    s.add(id(0), 1, 2 * KB, false);
    let a = sends(&s.poll(1, none));
    assert_eq!(a.len(), 1);
    let (link, _) = a[0];
    assert!(s.acked(link, id(0), 200_001));
    let g = s.goodput(link).expect("sampled");
    assert!(
        g >= CFG.initial_goodput,
        "{g}: an app-limited first sample lowered the estimate"
    );
    // Under more load than one link's window, both links carry batches.
    let mut used = [0u32; 2];
    let mut seq = 1;
    for tick in 1..20u64 {
        let now = 1_000_000 + tick * 100_000;
        for _ in 0..10 {
            s.add(id(seq), now, 20 * KB, false);
            seq += 1;
        }
        let out = sends(&s.poll(now, none));
        for (l, b) in out {
            used[l] += 1;
            s.acked(l, b, now + 60_000);
        }
    }
    assert!(used[0] > 0 && used[1] > 0, "{used:?}");
}

#[test]
fn a_deep_queue_on_a_slow_link_is_not_a_stall() {
    let mut s = Scheduler::new(CFG, 1);
    s.link_up(0);
    s.links[0].rtt_sample(30_000, 0);
    s.links[0].goodput = Some(250_000.0); // 2 Mbit/s
    // Two 125 kB batches: half a second each on the wire, RTO 150 ms.
    s.add(id(0), 1, 125 * KB, false);
    s.add(id(1), 2, 125 * KB, false);
    assert_eq!(s.poll(3, none).len(), 2);
    // The first is due at 150 + 500 ms, the second at 150 + 1000 ms from its send.
    s.poll(640_000, none);
    assert_eq!(s.state(0), LinkState::Up);
    assert!(s.acked(0, id(0), 640_000));
    // Counted from that ack, the second has an RTO (now larger: the sample was 640 ms) and
    // its own 500 ms more.
    s.poll(1_300_000, none);
    assert_eq!(
        s.state(0),
        LinkState::Up,
        "still within its time on the wire"
    );
    s.poll(3_200_000, none);
    assert_eq!(s.state(0), LinkState::Suspect, "and overdue after it");
    assert_eq!(s.counters(0).moved, 1);
}
