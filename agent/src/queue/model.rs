//! Model-based property test: the queue on a simulated disk against an in-memory model, over
//! random sequences of append / group commit / ack / read / disk full / crash / clean restart.
//!
//! A crash keeps what was fsynced plus an arbitrary part of the rest of every file (a torn
//! write, possibly with a hole of zeros). After every step and at the end, DESIGN.md §4 must
//! hold: every batch handed out is, in the end, delivered, announced as given up (evicted,
//! damaged), or lost in a crash above the durable end the next run announces; nothing fsynced is
//! lost; no identity is ever used for two payloads; disk use stays under the cap plus one segment;
//! drops on a full disk are counted and announced.

use super::sim::SimStore;
use super::*;
use crate::codec::{Envelope, Kind};
use proptest::prelude::*;
use sensor_drivers::Sample;
use std::collections::BTreeMap;

const CAP: u64 = 6_000;
const SEGMENT: u64 = 1_200;

#[derive(Debug, Clone)]
enum Op {
    Append { samples: u8 },
    Sync,
    Ack(u16),
    Read(u16),
    AckUnknown(u16),
    Crash { keep: u16, zero: Option<(u16, u16)> },
    Restart,
    DiskFull { room: u16 },
    DiskFree,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        10 => (1u8..40).prop_map(|samples| Op::Append { samples }),
        3 => Just(Op::Sync),
        4 => any::<u16>().prop_map(Op::Ack),
        2 => any::<u16>().prop_map(Op::Read),
        1 => any::<u16>().prop_map(Op::AckUnknown),
        1 => (any::<u16>(), proptest::option::of((any::<u16>(), 1u16..200)))
            .prop_map(|(keep, zero)| Op::Crash { keep, zero }),
        1 => Just(Op::Restart),
        1 => (0u16..600).prop_map(|room| Op::DiskFull { room }),
        1 => Just(Op::DiskFree),
    ]
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum St {
    /// In the queue, to deliver.
    Queued,
    /// Acked; `durable` once a group commit wrote the ack file afterwards.
    Acked { durable: bool },
    /// Given up on by the cap (the queue returned it in a gap).
    Evicted,
    /// Gone in a crash: must be above the durable end the next run announces, or announced as
    /// damaged.
    Crashed,
}

#[derive(Debug)]
struct B {
    payload: Vec<u8>,
    /// Covered by a finished group commit (or by the fsync that follows a notice).
    durable: bool,
    st: St,
}

#[derive(Debug, Default)]
struct Model {
    batches: BTreeMap<BatchId, B>,
    /// Per run, the durable end announced by the run after it.
    durable_end: BTreeMap<u32, Option<u64>>,
    /// Every gap notice the queue wrote. Only those delivered in the end count: that is what a
    /// receiver learns.
    notices: BTreeMap<BatchId, GapBody>,
    /// Runs ended by a crash.
    crashed_runs: std::collections::BTreeSet<u32>,
    /// Restarts (crash or clean) while the disk kept notices from being written: those live in
    /// memory, and in the ack file only if a group commit could save it.
    lossy_restarts: u64,
    /// Batches evicted before such a restart: their notice may have died with it.
    exempt: std::collections::BTreeSet<BatchId>,
    failed_appends: u64,
    samples_t: u64,
}

fn opts() -> QueueOptions {
    QueueOptions {
        cap_bytes: CAP,
        segment_bytes: SEGMENT,
        sync_bytes: u64::MAX,
        vehicle: "m".into(),
        ..QueueOptions::new("sim")
    }
}

impl Model {
    fn queued(&self) -> Vec<BatchId> {
        self.batches
            .iter()
            .filter(|(_, b)| b.st == St::Queued)
            .map(|(id, _)| *id)
            .collect()
    }

    fn take_notices(&mut self, q: &mut Queue<SimStore>) -> Result<(), TestCaseError> {
        for (id, payload) in q.take_notices() {
            prop_assert!(!self.batches.contains_key(&id), "notice reuses {}", id);
            let env: Envelope =
                codec::decode(&payload).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!((env.id, env.kind), (id, Kind::Gap));
            let g = codec::gap_body(&env).map_err(|e| TestCaseError::fail(e.to_string()))?;
            self.notices.insert(id, g);
            // Notices are fsynced as soon as they are written.
            self.batches.insert(
                id,
                B {
                    payload,
                    durable: true,
                    st: St::Queued,
                },
            );
        }
        Ok(())
    }

    /// After a start: the recovered queue against the model.
    fn check_recovered(
        &mut self,
        q: &mut Queue<SimStore>,
        rec: &Recovery,
        old_run: u32,
        crashed: bool,
    ) -> Result<(), TestCaseError> {
        prop_assert_eq!(rec.previous_run, Some(old_run));
        prop_assert!(q.run() > old_run);
        let durable_max = self
            .batches
            .iter()
            .filter(|(id, b)| id.run == old_run && b.durable)
            .map(|(id, _)| id.seq)
            .max();
        let d = rec.previous_durable_last_seq;
        prop_assert!(
            durable_max <= d,
            "announced durable end {:?} below the last fsynced batch {:?}",
            d,
            durable_max
        );
        self.durable_end.insert(old_run, d);
        if crashed {
            self.crashed_runs.insert(old_run);
        }
        let left = q.undelivered();
        for (id, _) in &left {
            let Some(b) = self.batches.get(id) else {
                return Err(TestCaseError::fail(format!(
                    "recovered {id}, never appended"
                )));
            };
            let p = q
                .read(*id)
                .map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(p.as_ref(), Some(&b.payload), "payload of {}", id);
            prop_assert!(
                matches!(b.st, St::Queued | St::Acked { durable: false }),
                "{} came back in state {:?}",
                id,
                b.st
            );
        }
        let left: std::collections::BTreeSet<BatchId> = left.into_iter().map(|x| x.0).collect();
        for (id, b) in self.batches.iter_mut() {
            match b.st {
                St::Queued | St::Acked { durable: false } if left.contains(id) => {
                    b.st = St::Queued;
                }
                St::Acked { durable: false } => b.st = St::Acked { durable: true },
                St::Queued => {
                    prop_assert!(crashed, "{} lost in a clean restart", id);
                    prop_assert!(!b.durable, "{} was fsynced and is gone", id);
                    b.st = St::Crashed;
                }
                _ => {}
            }
        }
        Ok(())
    }

    fn appended(&mut self, id: BatchId, payload: Vec<u8>) {
        let b = B {
            payload,
            durable: false,
            st: St::Queued,
        };
        self.batches.insert(id, b);
    }

    fn before_restart(&mut self, q: &Queue<SimStore>) {
        if q.stats().pending_notices > 0 {
            self.lossy_restarts += 1;
            for (id, b) in &self.batches {
                if b.st == St::Evicted {
                    self.exempt.insert(*id);
                }
            }
        }
    }

    fn evicted(&mut self, gone: Vec<GapBody>) -> Result<(), TestCaseError> {
        for g in gone {
            prop_assert_eq!(g.cause, GapCause::Evicted);
            for (a, b) in g.seqs {
                for seq in a..b {
                    let id = BatchId { run: g.run, seq };
                    let Some(x) = self.batches.get_mut(&id) else {
                        return Err(TestCaseError::fail(format!("evicted unknown {id}")));
                    };
                    prop_assert_eq!(x.st, St::Queued, "evicted {} in state {:?}", id, x.st);
                    x.st = St::Evicted;
                }
            }
        }
        Ok(())
    }

    fn mark_synced(&mut self, run: u32) {
        for (id, b) in self.batches.iter_mut() {
            if id.run == run {
                b.durable = true;
            }
            if b.st == (St::Acked { durable: false }) {
                b.st = St::Acked { durable: true };
            }
        }
    }
}

fn check_bounds(q: &Queue<SimStore>, sim: &SimStore) -> Result<(), TestCaseError> {
    let st = q.stats();
    prop_assert!(
        st.bytes_on_disk <= CAP + SEGMENT,
        "{} bytes queued",
        st.bytes_on_disk
    );
    let on_disk: u64 = sim
        .names()
        .iter()
        .filter(|n| n.ends_with(".seg"))
        .filter_map(|n| sim.size_of(n))
        .sum();
    prop_assert!(
        on_disk <= CAP + SEGMENT,
        "{} bytes of segments on the disk",
        on_disk
    );
    Ok(())
}

fn run_case(ops: Vec<Op>) -> Result<(), TestCaseError> {
    let sim = SimStore::default();
    let (mut q, _) =
        Queue::open_in(sim.clone(), opts()).map_err(|e| TestCaseError::fail(e.to_string()))?;
    let mut m = Model::default();
    let mut full = false;
    for op in ops {
        match op {
            Op::Append { samples } => {
                m.samples_t += 1000;
                let t0 = m.samples_t;
                let s: Vec<Sample> = (0..samples)
                    .map(|i| Sample {
                        t_us: t0 + u64::from(i),
                        channel: 0,
                        value: f64::from(i),
                    })
                    .collect();
                let meta = BatchMeta {
                    samples: u32::from(samples),
                    t_first_us: t0,
                    t_last_us: t0 + u64::from(samples) - 1,
                };
                let (res, gone) = q.append(meta, |id| {
                    codec::encode(&codec::data_envelope("m", id, "s", &s))
                });
                match res {
                    Some((id, payload)) => {
                        prop_assert_eq!(id.run, q.run());
                        prop_assert!(!m.batches.contains_key(&id), "{} handed out twice", id);
                        prop_assert!(
                            m.batches
                                .keys()
                                .filter(|k| k.run == id.run)
                                .all(|k| k.seq < id.seq),
                            "{} not above every earlier id of its run",
                            id
                        );
                        m.appended(id, payload);
                    }
                    None => {
                        prop_assert!(full, "an append failed with room on the disk");
                        m.failed_appends += 1;
                    }
                }
                // Notices first: one written by this append may already be evicted by it.
                m.take_notices(&mut q)?;
                m.evicted(gone)?;
            }
            Op::Sync => match q.sync() {
                Ok(()) => {
                    let run = q.run();
                    m.mark_synced(run);
                    let st = q.stats();
                    prop_assert_eq!(st.durable_seq, st.next_seq.checked_sub(1));
                }
                Err(e) => prop_assert!(full, "group commit failed with room on the disk: {}", e),
            },
            Op::Ack(k) => {
                let queued = m.queued();
                if let Some(&id) = queued.get(usize::from(k) % queued.len().max(1)) {
                    prop_assert!(q.ack(id), "ack of queued {} refused", id);
                    prop_assert!(!q.ack(id), "second ack of {} taken", id);
                    if let Some(b) = m.batches.get_mut(&id) {
                        b.st = St::Acked { durable: false };
                    }
                }
            }
            Op::AckUnknown(k) => {
                let id = BatchId {
                    run: q.run() + 1,
                    seq: u64::from(k),
                };
                prop_assert!(!q.ack(id));
                let gone: Vec<BatchId> = m
                    .batches
                    .iter()
                    .filter(|(_, b)| matches!(b.st, St::Evicted | St::Crashed))
                    .map(|(id, _)| *id)
                    .collect();
                if let Some(&id) = gone.get(usize::from(k) % gone.len().max(1)) {
                    prop_assert!(!q.ack(id), "ack of gone {} taken", id);
                    prop_assert_eq!(q.read(id).ok().flatten(), None);
                }
            }
            Op::Read(k) => {
                let queued = m.queued();
                if let Some(&id) = queued.get(usize::from(k) % queued.len().max(1)) {
                    let p = q.read(id).map_err(|e| TestCaseError::fail(e.to_string()))?;
                    prop_assert_eq!(p.as_ref(), m.batches.get(&id).map(|b| &b.payload));
                }
                let first = q.oldest_undelivered(|_| false);
                prop_assert_eq!(first, m.queued().first().copied());
            }
            Op::Crash { keep, zero } => {
                let old = q.run();
                m.before_restart(&q);
                drop(q);
                // Power comes back with room on the disk (a full disk at start-up has its own
                // test).
                full = false;
                sim.crash(
                    |unsynced| usize::from(keep) % (unsynced + 1),
                    |kept| {
                        zero.filter(|_| kept > 0)
                            .map(|(s, n)| (usize::from(s) % kept, usize::from(n)))
                    },
                );
                sim.set_capacity(None);
                let (nq, rec) = Queue::open_in(sim.clone(), opts())
                    .map_err(|e| TestCaseError::fail(format!("reopen after crash: {e}")))?;
                q = nq;
                m.check_recovered(&mut q, &rec, old, true)?;
            }
            Op::Restart => {
                let old = q.run();
                m.before_restart(&q);
                if q.sync().is_ok() {
                    m.mark_synced(old);
                }
                drop(q);
                full = false;
                sim.set_capacity(None);
                let (nq, rec) = Queue::open_in(sim.clone(), opts())
                    .map_err(|e| TestCaseError::fail(format!("reopen: {e}")))?;
                q = nq;
                m.check_recovered(&mut q, &rec, old, false)?;
            }
            Op::DiskFull { room } => {
                full = true;
                sim.set_capacity(Some(sim.total_bytes() + u64::from(room)));
            }
            Op::DiskFree => {
                full = false;
                sim.set_capacity(None);
            }
        }
        check_bounds(&q, &sim)?;
        let queued = m.queued().len() as u64;
        prop_assert_eq!(q.undelivered_count(), queued, "undelivered count");
    }

    // The end: room again, a clean restart, one more append (pending notices get written), then
    // deliver everything.
    sim.set_capacity(None);
    let old = q.run();
    q.sync().map_err(|e| TestCaseError::fail(e.to_string()))?;
    m.mark_synced(old);
    drop(q);
    let (mut q, rec) =
        Queue::open_in(sim.clone(), opts()).map_err(|e| TestCaseError::fail(e.to_string()))?;
    m.check_recovered(&mut q, &rec, old, false)?;
    let (res, gone) = q.append(BatchMeta::default(), |id| {
        codec::encode(&codec::data_envelope::<Sample>("m", id, "s", &[]))
    });
    let Some((id, payload)) = res else {
        return Err(TestCaseError::fail("append with room failed"));
    };
    m.appended(id, payload);
    m.take_notices(&mut q)?;
    m.evicted(gone)?;
    for (id, _) in q.undelivered() {
        let p = q.read(id).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(p.as_ref(), m.batches.get(&id).map(|b| &b.payload));
        prop_assert!(q.ack(id));
        if let Some(b) = m.batches.get_mut(&id) {
            b.st = St::Acked { durable: false };
        }
    }
    prop_assert_eq!(q.undelivered_count(), 0);
    prop_assert!(
        m.queued().is_empty(),
        "queued in the model, not in the queue: {:?}",
        m.queued()
    );

    // Every identity accounted for, from what a receiver learnt: the notices delivered (a
    // notice evicted before delivery was written again word for word: count each body once).
    let mut announced_sets: BTreeMap<(GapCause, u32), RangeSet> = BTreeMap::new();
    let mut bodies = std::collections::BTreeSet::new();
    let mut dropped_announced = 0;
    for (id, g) in &m.notices {
        if !matches!(m.batches.get(id).map(|b| b.st), Some(St::Acked { .. })) {
            continue;
        }
        if !bodies.insert(format!("{g:?}")) {
            continue;
        }
        if g.cause == GapCause::Dropped {
            dropped_announced += g.batches;
        }
        let set = announced_sets.entry((g.cause, g.run)).or_default();
        for &(a, b) in &g.seqs {
            set.insert_range(a, b);
        }
    }
    let announced = |cause: GapCause, id: BatchId| {
        announced_sets
            .get(&(cause, id.run))
            .is_some_and(|s| s.contains(id.seq))
    };
    for (id, b) in &m.batches {
        match b.st {
            St::Acked { .. } | St::Queued => {}
            // An eviction whose notice died in a crash before it was written looks, to the
            // receiver, like a loss in that crash: fine if it lies above the durable end.
            St::Evicted => {
                let end = m.durable_end.get(&id.run).copied().flatten();
                prop_assert!(
                    announced(GapCause::Evicted, *id)
                        || announced(GapCause::Damaged, *id)
                        || (m.crashed_runs.contains(&id.run) && end.is_none_or(|d| id.seq > d))
                        || m.exempt.contains(id),
                    "evicted {} never announced (durable end {:?}, crashed runs {:?}, announced {:?})",
                    id,
                    end,
                    m.crashed_runs,
                    announced_sets
                );
            }
            St::Crashed => {
                let end = m.durable_end.get(&id.run).copied().flatten();
                prop_assert!(
                    end.is_none_or(|d| id.seq > d) || announced(GapCause::Damaged, *id),
                    "{} lost in a crash but below the announced durable end {:?} and not announced damaged",
                    id,
                    end
                );
            }
        }
    }
    prop_assert!(
        dropped_announced <= m.failed_appends
            && (m.lossy_restarts > 0 || dropped_announced == m.failed_appends),
        "refused appends: {} announced, {} refused, {} restarts with notices pending",
        dropped_announced,
        m.failed_appends,
        m.lossy_restarts
    );
    prop_assert_eq!(
        q.stats().dropped_batches,
        0,
        "counters restart with each run"
    );
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]
    #[test]
    fn queue_matches_its_model(ops in proptest::collection::vec(op(), 1..120)) {
        run_case(ops)?;
    }
}

#[test]
fn a_torn_tail_is_lost_in_the_crash_and_nothing_durable_is() {
    run_case(vec![
        Op::Append { samples: 3 },
        Op::Append { samples: 3 },
        Op::Sync,
        Op::Append { samples: 3 },
        Op::Append { samples: 3 },
        Op::Crash {
            keep: 30,
            zero: None,
        },
        Op::Append { samples: 3 },
    ])
    .expect("model holds");
}
