use super::*;
use crate::codec::{self, BatchId, GapCause};
use sensor_drivers::Sample;
use std::fs;
use std::path::Path;

fn opts(dir: &Path, cap: u64, seg: u64) -> QueueOptions {
    QueueOptions {
        cap_bytes: cap,
        segment_bytes: seg,
        ..QueueOptions::new(dir)
    }
}

fn samples(n: usize, t0: u64) -> Vec<Sample> {
    (0..n)
        .map(|i| Sample {
            t_us: t0 + i as u64,
            channel: 0,
            value: i as f64,
        })
        .collect()
}

/// Appends one data batch of `n` samples; returns its id.
fn put(q: &mut Queue, n: usize) -> (BatchId, Vec<GapBody>) {
    let s = samples(n, 1_000_000);
    let meta = BatchMeta {
        samples: n as u32,
        t_first_us: 1_000_000,
        t_last_us: 1_000_000 + n as u64 - 1,
    };
    let (r, gaps) = q.append(meta, |id| {
        codec::encode(&codec::data_envelope_plain("v", id, "s", &s))
    });
    (r.expect("append works").0, gaps)
}

fn seg_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(dir)
        .expect("list")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "seg"))
        .collect();
    v.sort();
    v
}

#[test]
fn append_reopen_keeps_undelivered_and_never_reuses_identity() {
    let d = tempfile::tempdir().expect("tmp");
    let (mut q, rec) = Queue::open(opts(d.path(), 1 << 30, 1 << 20)).expect("open");
    assert_eq!(rec.previous_run, None);
    assert_eq!(q.run(), 1);
    let ids: Vec<BatchId> = (0..5).map(|_| put(&mut q, 10).0).collect();
    assert_eq!(ids[4], BatchId { run: 1, seq: 4 });
    q.sync().expect("sync");
    assert_eq!(q.stats().durable_seq, Some(4));
    assert!(q.ack(ids[1]));
    assert!(!q.ack(ids[1]), "second ack of the same batch is a no-op");
    q.sync().expect("sync");
    drop(q);

    let (mut q, rec) = Queue::open(opts(d.path(), 1 << 30, 1 << 20)).expect("reopen");
    assert_eq!(q.run(), 2, "each start is a new run");
    assert_eq!(rec.previous_run, Some(1));
    assert_eq!(rec.previous_durable_last_seq, Some(4));
    assert_eq!(rec.undelivered, 4);
    let left: Vec<BatchId> = q.undelivered().into_iter().map(|x| x.0).collect();
    assert_eq!(left, vec![ids[0], ids[2], ids[3], ids[4]]);
    let payload = q.read(ids[3]).expect("read").expect("present");
    let env = codec::decode(&payload).expect("decodes");
    assert_eq!(env.id, ids[3]);
    let (id, _) = put(&mut q, 1);
    assert_eq!(id, BatchId { run: 2, seq: 0 });
}

#[test]
fn fully_delivered_segments_are_deleted() {
    let d = tempfile::tempdir().expect("tmp");
    // Tiny segments: one record each.
    let (mut q, _) = Queue::open(opts(d.path(), 1 << 30, 64)).expect("open");
    let ids: Vec<BatchId> = (0..4).map(|_| put(&mut q, 10).0).collect();
    assert_eq!(seg_files(d.path()).len(), 4);
    for id in &ids {
        q.ack(*id);
    }
    assert_eq!(q.stats().undelivered, 0);
    assert_eq!(
        seg_files(d.path()).len(),
        4,
        "kept until the acks are durable"
    );
    q.sync().expect("sync");
    assert_eq!(
        seg_files(d.path()).len(),
        1,
        "only the active segment stays"
    );
    drop(q);
    let (mut q, rec) = Queue::open(opts(d.path(), 1 << 30, 64)).expect("reopen");
    assert_eq!(rec.undelivered, 0);
    assert!(q.undelivered().is_empty());
}

/// A closed queue in `dir` holding three equal-sized records in one segment; returns its path.
fn three_records_in_one_segment(dir: &Path) -> PathBuf {
    let (mut q, _) = Queue::open(opts(dir, 1 << 30, 1 << 20)).expect("open");
    for _ in 0..3 {
        put(&mut q, 5);
    }
    q.sync().expect("sync");
    drop(q);
    seg_files(dir).pop().expect("one segment")
}

#[test]
fn torn_tail_at_every_offset_of_the_last_record() {
    let d = tempfile::tempdir().expect("tmp");
    let path = three_records_in_one_segment(d.path());
    let full = fs::read(&path).expect("read");
    let rec_len = full.len() / 3;
    for cut in (full.len() - rec_len)..full.len() {
        let d2 = tempfile::tempdir().expect("tmp");
        let p2 = d2.path().join(path.file_name().expect("name"));
        fs::write(&p2, &full[..cut]).expect("write");
        let (mut q2, rec) =
            Queue::open(opts(d2.path(), 1 << 30, 1 << 20)).expect("opens despite a torn tail");
        assert_eq!(rec.records, 2, "cut at {cut}");
        assert_eq!(
            rec.truncated_bytes,
            (cut - 2 * rec_len) as u64,
            "cut at {cut}"
        );
        assert_eq!(rec.previous_durable_last_seq, Some(1));
        assert_eq!(q2.undelivered().len(), 2);
        assert_eq!(
            fs::metadata(&p2).expect("meta").len(),
            (2 * rec_len) as u64,
            "tail truncated"
        );
    }
}

#[test]
fn flipped_bit_mid_segment_skips_one_record() {
    let d = tempfile::tempdir().expect("tmp");
    let path = three_records_in_one_segment(d.path());
    let mut bytes = fs::read(&path).expect("read");
    let rec_len = bytes.len() / 3;
    bytes[rec_len + HEADER_LEN + 3] ^= 0x10; // payload of the middle record
    fs::write(&path, &bytes).expect("write");
    let (mut q, rec) = Queue::open(opts(d.path(), 1 << 30, 1 << 20)).expect("open");
    assert_eq!(rec.corrupt_records, 1);
    assert_eq!(rec.records, 2);
    let seqs: Vec<u64> = q.undelivered().iter().map(|x| x.0.seq).collect();
    assert_eq!(seqs, vec![0, 2]);
}

#[test]
fn zero_length_and_missing_segments_do_not_wedge() {
    let d = tempfile::tempdir().expect("tmp");
    let (mut q, _) = Queue::open(opts(d.path(), 1 << 30, 64)).expect("open");
    for _ in 0..4 {
        put(&mut q, 5);
    }
    q.sync().expect("sync");
    drop(q);
    let files = seg_files(d.path());
    fs::remove_file(&files[1]).expect("rm middle");
    fs::write(&files[2], b"").expect("zero length");
    fs::write(d.path().join("acks"), b"\xff\xff garbage").expect("bad acks");
    let (mut q, rec) = Queue::open(opts(d.path(), 1 << 30, 64)).expect("opens");
    let seqs: Vec<u64> = q.undelivered().iter().map(|x| x.0.seq).collect();
    assert_eq!(seqs, vec![0, 3]);
    assert_eq!(rec.previous_durable_last_seq, Some(3));
    assert!(rec.acks_unreadable);
    // The two batches that vanished are announced, not left for the receiver to wonder about.
    assert_eq!(rec.damaged_batches, 2);
    put(&mut q, 1);
    let notices = q.take_notices();
    assert_eq!(notices.len(), 1);
    let env = codec::decode(&notices[0].1).expect("decodes");
    let g = codec::gap_body(&env).expect("gap");
    assert_eq!(
        (g.cause, g.run, g.seqs.clone()),
        (GapCause::Damaged, 1, vec![(1, 3)])
    );
    // Announced once: the next start does not repeat it.
    q.sync().expect("sync");
    drop(q);
    let (_, rec) = Queue::open(opts(d.path(), 1 << 30, 64)).expect("opens again");
    assert_eq!(rec.damaged_batches, 0);
}

#[test]
fn sealed_segments_recover_from_their_index_and_only_the_tail_is_scanned() {
    let d = tempfile::tempdir().expect("tmp");
    let (mut q, _) = Queue::open(opts(d.path(), 1 << 30, 1024)).expect("open");
    let ids: Vec<BatchId> = (0..60).map(|_| put(&mut q, 10).0).collect();
    q.sync().expect("sync");
    let segments = q.stats().segments;
    assert!(segments > 5);
    drop(q); // no clean close: like a SIGKILL after the last group commit
    let (mut q, rec) = Queue::open(opts(d.path(), 1 << 30, 1024)).expect("reopen");
    assert_eq!(rec.scanned_segments, 1, "only the tail");
    assert_eq!(rec.indexed_segments, segments - 1);
    assert_eq!(rec.records, 60);
    for id in &ids {
        let p = q.read(*id).expect("read").expect("present");
        assert_eq!(codec::decode(&p).expect("decodes").id, *id);
    }
    // The scanned tail was indexed in passing: the next start scans nothing.
    drop(q);
    let (_, rec) = Queue::open(opts(d.path(), 1 << 30, 1024)).expect("reopen");
    assert_eq!((rec.scanned_segments, rec.indexed_segments), (0, segments));
}

#[test]
fn a_record_damaged_at_rest_is_announced_when_read() {
    let d = tempfile::tempdir().expect("tmp");
    let (mut q, _) = Queue::open(opts(d.path(), 1 << 30, 1024)).expect("open");
    let ids: Vec<BatchId> = (0..20).map(|_| put(&mut q, 10).0).collect();
    q.sync().expect("sync");
    drop(q);
    // Rot a payload byte of the first record of the first (indexed) segment.
    let first = seg_files(d.path()).remove(0);
    let mut bytes = fs::read(&first).expect("read");
    bytes[HEADER_LEN + 5] ^= 0x40;
    fs::write(&first, &bytes).expect("write");
    let (mut q, rec) = Queue::open(opts(d.path(), 1 << 30, 1024)).expect("reopen");
    assert_eq!(rec.corrupt_records, 0, "the index is trusted: no scan");
    assert_eq!(q.read(ids[0]).expect("read"), None, "damaged: given up");
    assert!(q.read(ids[1]).expect("read").is_some());
    assert_eq!(q.stats().damaged_batches, 1);
    assert_eq!(q.stats().undelivered, 19);
    put(&mut q, 1);
    let notices = q.take_notices();
    let g = codec::gap_body(&codec::decode(&notices[0].1).expect("decodes")).expect("gap");
    assert_eq!(
        (g.cause, g.seqs.clone(), g.samples),
        (GapCause::Damaged, vec![(0, 1)], 10)
    );
}

#[test]
fn a_full_disk_at_start_up_costs_the_oldest_segment_not_the_start() {
    let sim = sim::SimStore::default();
    let o = QueueOptions {
        cap_bytes: 1 << 20,
        segment_bytes: 600,
        ..QueueOptions::new("sim")
    };
    let (mut q, _) = Queue::open_in(sim.clone(), o.clone()).expect("open");
    for _ in 0..20 {
        let s = samples(5, 1);
        let meta = BatchMeta {
            samples: 5,
            ..BatchMeta::default()
        };
        let (r, _) = q.append(meta, |id| {
            codec::encode(&codec::data_envelope_plain("v", id, "s", &s))
        });
        r.expect("append");
    }
    q.sync().expect("sync");
    let run = q.run();
    drop(q);
    sim.set_capacity(Some(sim.total_bytes()));
    let (mut q, rec) = Queue::open_in(sim.clone(), o).expect("starts on a full disk");
    assert_eq!(q.run(), run + 1);
    assert!(rec.removed_for_room >= 1);
    assert!(
        rec.damaged_batches >= 1,
        "the deleted batches are announced"
    );
    sim.set_capacity(None);
    let s = samples(1, 1);
    let (r, _) = q.append(BatchMeta::default(), |id| {
        codec::encode(&codec::data_envelope_plain("v", id, "s", &s))
    });
    r.expect("append");
    let g = codec::gap_body(&codec::decode(&q.take_notices()[0].1).expect("decodes")).expect("gap");
    assert_eq!(g.cause, GapCause::Damaged);
    assert_eq!(g.batches, rec.damaged_batches);
}

#[test]
fn cap_evicts_oldest_and_reports_the_gap() {
    let d = tempfile::tempdir().expect("tmp");
    // Records of ~150 bytes, segments of ~10 records, cap of 4 segments.
    let (mut q, _) = Queue::open(opts(d.path(), 6000, 1500)).expect("open");
    let mut gaps = Vec::new();
    let mut data = Vec::new();
    let mut notices = Vec::new();
    for _ in 0..300 {
        let (id, g) = put(&mut q, 8);
        data.push(id);
        gaps.extend(g);
        notices.extend(q.take_notices());
        assert!(q.stats().bytes_on_disk <= 6000 + 1500, "cap + one segment");
    }
    assert!(!gaps.is_empty());
    let mut evicted = RangeSet::new();
    for g in &gaps {
        assert_eq!(g.cause, GapCause::Evicted);
        for (s, e) in &g.seqs {
            evicted.insert_range(*s, *e);
        }
    }
    assert_eq!(evicted.len(), q.stats().evicted_batches);
    let evicted_data = data.iter().filter(|id| evicted.contains(id.seq)).count() as u64;
    assert_eq!(q.stats().evicted_samples, evicted_data * 8);
    // Every batch (data or notice) is evicted or still queued, never both.
    let left: Vec<BatchId> = q.undelivered().into_iter().map(|x| x.0).collect();
    let all: Vec<BatchId> = data
        .iter()
        .chain(notices.iter().map(|n| &n.0))
        .copied()
        .collect();
    for id in &all {
        assert!(evicted.contains(id.seq) != left.contains(id), "{id}");
    }
    assert_eq!(evicted.len() + left.len() as u64, all.len() as u64);
    assert!(
        notices.iter().any(|n| evicted.contains(n.0.seq)),
        "the cap is small enough to evict notices too"
    );
    // Evicted ids are the oldest ones, contiguous from 0.
    assert_eq!(
        evicted.iter_ranges().collect::<Vec<_>>(),
        vec![(0, evicted.len())]
    );
    // What a receiver gets (the notices still queued) announces every eviction, including
    // those announced by notices that were evicted in turn.
    let mut announced = RangeSet::new();
    for (id, payload) in &notices {
        if !left.contains(id) {
            continue;
        }
        let env = codec::decode(payload).expect("notice decodes");
        assert_eq!((env.id, env.kind), (*id, codec::Kind::Gap));
        for (s, e) in codec::gap_body(&env).expect("gap body").seqs {
            announced.insert_range(s, e);
        }
    }
    assert_eq!(announced, evicted);
}

#[test]
fn delivered_batches_are_not_reported_as_evicted() {
    let d = tempfile::tempdir().expect("tmp");
    let (mut q, _) = Queue::open(opts(d.path(), 6000, 1500)).expect("open");
    let mut gaps = Vec::new();
    let mut acked = RangeSet::new();
    for i in 0..300 {
        let (id, g) = put(&mut q, 8);
        gaps.extend(g);
        if i % 2 == 0 {
            assert!(q.ack(id));
            acked.insert(id.seq);
        }
    }
    assert!(!gaps.is_empty());
    for g in &gaps {
        for (s, e) in &g.seqs {
            assert!(
                (*s..*e).all(|x| !acked.contains(x)),
                "only undelivered seqs in gaps: {g:?}"
            );
        }
    }
}

mod garbage {
    use super::super::sim::SimStore;
    use super::super::*;
    use proptest::prelude::*;

    fn file() -> impl Strategy<Value = (String, Vec<u8>)> {
        let name = prop_oneof![
            (0u32..3, 0u64..40).prop_map(|(r, s)| segment::seg_name(r, s)),
            (0u32..3, 0u64..40).prop_map(|(r, s)| segment::idx_name(r, s)),
            Just("acks".to_string()),
            Just("run".to_string()),
            Just(".acks.tmp".to_string()),
        ];
        (name, proptest::collection::vec(any::<u8>(), 0..600))
    }

    #[test]
    fn a_run_file_at_the_top_does_not_wrap_onto_runs_on_disk() {
        let sim = SimStore::default();
        let (mut q, _) = Queue::open_in(sim.clone(), QueueOptions::new("sim")).expect("open");
        let (r, _) = q.append(BatchMeta::default(), |id| {
            codec::encode(&codec::data_envelope::<sensor_drivers::Sample>(
                "v",
                id,
                "s",
                &[],
            ))
        });
        assert_eq!(r.expect("append").0.run, 1);
        q.sync().expect("sync");
        drop(q);
        sim.write_atomic("run", format!("{}\n", u32::MAX).as_bytes())
            .expect("write");
        let (q, rec) = Queue::open_in(sim.clone(), QueueOptions::new("sim")).expect("open");
        assert_eq!(rec.previous_run, Some(u32::MAX));
        assert_eq!(q.run(), 2, "above the highest run on disk");
        assert_eq!(rec.undelivered, 1, "run 1's batch is still there");
    }

    proptest! {
        /// Whatever is in the directory, the queue starts, and every batch it lists can be read
        /// or is given up on; nothing panics.
        #[test]
        fn any_directory_content_opens(files in proptest::collection::vec(file(), 0..12)) {
            let sim = SimStore::default();
            for (name, bytes) in &files {
                sim.write_atomic(name, bytes).expect("sim write");
            }
            let (mut q, rec) = Queue::open_in(sim.clone(), QueueOptions::new("sim"))
                .expect("opens whatever it finds");
            prop_assert!(q.run() >= 1);
            // Never a run that still has segments on disk.
            for (name, _) in &files {
                if let Some((r, _, false)) = segment::parse_name(name) {
                    prop_assert_ne!(q.run(), r);
                }
            }
            prop_assert!(rec.previous_run.is_none_or(|r| q.run() > r || r == u32::MAX));
            for (id, _) in q.undelivered() {
                let _ = q.read(id).expect("reads or gives up");
            }
            let (r, _) = q.append(BatchMeta::default(), |id| {
                codec::encode(&codec::data_envelope::<sensor_drivers::Sample>("v", id, "s", &[]))
            });
            prop_assert!(r.is_some());
            q.sync().expect("sync");
        }

        /// Record scanning on arbitrary bytes: no panic, and every record it keeps reads back.
        #[test]
        fn scanning_random_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..2000)) {
            let sim = SimStore::default();
            sim.write_atomic("x.seg", &bytes).expect("sim write");
            let mut f = sim.open("x.seg").expect("open");
            let (entries, end, _) = segment::scan(&mut f, 1, 0).expect("scan");
            prop_assert!(end <= bytes.len() as u64);
            for e in &entries {
                prop_assert!(segment::read_record(&f, 1, e).is_ok());
            }
            prop_assert!(segment::decode_index(&bytes, end).is_none_or(|_| bytes.len() >= 4));
            prop_assert!(decode_acks(&bytes).is_none() || bytes.len() >= 4);
        }
    }
}

#[test]
fn memory_holds_segment_summaries_not_batch_entries() {
    let d = tempfile::tempdir().expect("tmp");
    let (mut q, _) = Queue::open(opts(d.path(), 1 << 30, 2048)).expect("open");
    for _ in 0..2000 {
        put(&mut q, 10);
    }
    q.sync().expect("sync");
    let segments = q.segments.len();
    assert!(segments > 100, "{segments} segments");
    // Backfill the whole backlog oldest first, acking as it goes.
    let mut sent = 0;
    while let Some(id) = q.oldest_undelivered(|_| false) {
        assert!(q.read(id).expect("read").is_some());
        assert!(q.ack(id));
        sent += 1;
        assert!(
            q.loaded.len() <= LOADED,
            "offsets of at most {LOADED} sealed segments"
        );
    }
    assert_eq!(sent, 2000);
    // Per segment: one range of sequence numbers, whatever the number of batches in it.
    assert!(q.segments.iter().all(|s| s.present.range_count() <= 1));
    // Delivered sequence numbers: one range for the whole run.
    assert_eq!(
        q.delivered.get(&q.run()).map(RangeSet::range_count),
        Some(1)
    );
    q.sync().expect("sync");
    assert_eq!(
        q.segments.len(),
        1,
        "delivered segments deleted, the active one stays"
    );
}
