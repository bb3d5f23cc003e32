use super::*;

const R: u32 = 7;

fn id(seq: u64) -> BatchId {
    BatchId { run: R, seq }
}

#[test]
fn payload_round_trips_and_carries_its_counter() {
    let p = encode_payload(id(3), 42, 4096);
    assert_eq!(p.len(), 4096);
    assert_eq!(verify_payload(id(3), &p), Ok(42));
    // Tiny sizes are raised to the overhead and still verify.
    let p = encode_payload(id(0), 1, 0);
    assert_eq!(p.len(), PAYLOAD_OVERHEAD);
    assert_eq!(verify_payload(id(0), &p), Ok(1));
}

#[test]
fn payload_damage_is_detected() {
    let good = encode_payload(id(3), 42, 1024);
    for at in [0, 9, 30, 500, 1023] {
        let mut p = good.clone();
        p[at] ^= 0x10;
        assert_eq!(
            verify_payload(id(3), &p),
            Err(PayloadError::Checksum),
            "byte {at}"
        );
    }
    assert_eq!(
        verify_payload(id(3), &good[..good.len() - 1]),
        Err(PayloadError::Checksum)
    );
    assert_eq!(verify_payload(id(3), &good[..10]), Err(PayloadError::Short));
    assert_eq!(
        verify_payload(id(4), &good),
        Err(PayloadError::WrongId(id(3)))
    );
    assert_eq!(
        verify_payload(BatchId { run: R + 1, seq: 3 }, &good),
        Err(PayloadError::WrongId(id(3)))
    );
}

/// Re-seals `body` (everything but the checksum) with a fresh checksum.
fn reseal(mut body: Vec<u8>) -> Vec<u8> {
    let crc = crc32c::crc32c(&body);
    body.extend_from_slice(&crc.to_le_bytes());
    body
}

#[test]
fn payload_with_a_valid_checksum_but_foreign_content_is_detected() {
    let good = encode_payload(id(3), 42, 256);
    let mut body = good[..good.len() - 4].to_vec();
    // Claim another counter: the filler no longer belongs to it.
    body[..8].copy_from_slice(&43u64.to_le_bytes());
    assert_eq!(
        verify_payload(id(3), &reseal(body.clone())),
        Err(PayloadError::Content)
    );
    // A length field that disagrees with the actual length.
    let mut body2 = good[..good.len() - 4].to_vec();
    body2[20..24].copy_from_slice(&100u32.to_le_bytes());
    assert_eq!(
        verify_payload(id(3), &reseal(body2)),
        Err(PayloadError::Length)
    );
}

#[test]
fn writer_lines_round_trip_and_cut_lines_do_not_parse() {
    let lines = [
        WriterLine::Run {
            run: 3,
            previous_durable: None,
        },
        WriterLine::Run {
            run: 5,
            previous_durable: Some(17),
        },
        WriterLine::Appended {
            seq: 0,
            counter: 1 << 32,
            t_us: 1003,
        },
        WriterLine::Durable {
            seq: 99,
            t_us: 100_500,
        },
    ];
    for l in lines {
        assert_eq!(WriterLine::parse(&l.to_string()), Some(l), "{l}");
    }
    for bad in [
        "",
        "appended 12 coun",
        "appended 12 counter 5",
        "durable x t_us 1",
        "run 3 previous_durable maybe",
        "written 1048576",
    ] {
        assert_eq!(WriterLine::parse(bad), None, "{bad:?}");
    }
}

/// The report of a writer in run R that appended seqs 0..n (1 ms apart, counter 100 + seq) and
/// reported commits up to `durable`.
fn log_of(n: u64, durable: Option<u64>) -> CycleLog {
    let mut log = CycleLog::default();
    log.feed(&format!("run {R} previous_durable none"));
    for seq in 0..n {
        log.feed(&format!(
            "appended {seq} counter {} t_us {}",
            100 + seq,
            (seq + 1) * 1000
        ));
        if durable == Some(seq) {
            log.feed(&format!("durable {seq} t_us {}", (seq + 1) * 1000 + 300));
        }
    }
    log
}

fn recovery(run: u32, end: Option<u64>) -> Recovery {
    Recovery {
        previous_run: Some(run),
        previous_durable_last_seq: end,
        ..Recovery::default()
    }
}

fn deliver_range(l: &mut Ledger, seqs: std::ops::Range<u64>) {
    for seq in seqs {
        assert_eq!(l.deliver(id(seq), Ok(100 + seq)), Delivery::New);
    }
}

#[test]
fn a_clean_cycle_counts_nothing_against_the_queue() {
    let log = log_of(10, Some(7));
    assert_eq!(log.last_durable, Some(7));
    let mut l = Ledger::default();
    deliver_range(&mut l, 0..10);
    l.close_cycle(&log, &recovery(R, Some(9)));
    let t = l.totals();
    assert_eq!(
        *t,
        CrashTotals {
            kills: 1,
            batches_appended: 10,
            batches_recovered: 10,
            // last append at 10 ms, last durable batch (seq 7) appended at 8 ms
            max_exposure_us: 2000,
            ..CrashTotals::default()
        }
    );
}

#[test]
fn missing_durable_batches_and_the_fsync_window_are_told_apart() {
    let log = log_of(10, Some(7));
    let mut l = Ledger::default();
    deliver_range(&mut l, 0..5);
    // Recovery found only up to 4: 5..=7 were reported durable, 8 and 9 were not yet.
    l.close_cycle(&log, &recovery(R, Some(4)));
    let t = l.totals();
    assert_eq!(t.lost_durable, 3);
    assert_eq!(t.durable_end_short, 1);
    assert_eq!(t.lost_before_fsync, 2);
    assert_eq!(t.lost_unaccounted, 0);
}

#[test]
fn a_loss_below_the_recovered_end_is_unaccounted() {
    let log = log_of(10, Some(7));
    let mut l = Ledger::default();
    deliver_range(&mut l, 0..8);
    deliver_range(&mut l, 9..10);
    l.close_cycle(&log, &recovery(R, Some(9)));
    let t = l.totals();
    assert_eq!((t.lost_durable, t.lost_before_fsync), (0, 0));
    assert_eq!(
        t.lost_unaccounted, 1,
        "seq 8 was on disk by recovery's account"
    );
}

#[test]
fn without_any_commit_every_missing_append_is_in_the_fsync_window() {
    let log = log_of(4, None);
    let mut l = Ledger::default();
    deliver_range(&mut l, 0..1);
    l.close_cycle(&log, &recovery(R, Some(0)));
    let t = l.totals();
    assert_eq!((t.lost_durable, t.durable_end_short), (0, 0));
    assert_eq!(t.lost_before_fsync, 3);
    assert_eq!(
        t.max_exposure_us, 4000,
        "from the run's start to the last append"
    );
}

#[test]
fn dedup_by_identity_and_duplicates_by_content() {
    let mut l = Ledger::default();
    assert_eq!(l.deliver(id(0), Ok(100)), Delivery::New);
    assert_eq!(l.deliver(id(0), Ok(100)), Delivery::DuplicateId);
    assert_eq!(l.deliver(id(1), Ok(100)), Delivery::DuplicateContent);
    assert_eq!(
        l.deliver(id(2), Err(PayloadError::Checksum)),
        Delivery::Corrupt(PayloadError::Checksum)
    );
    let t = l.totals();
    assert_eq!(t.redelivered, 1);
    assert_eq!(t.duplicates_after_dedup, 1);
    assert_eq!(t.corrupt_payloads, 1);
    assert_eq!(t.batches_recovered, 2, "distinct identities");
}

#[test]
fn a_corrupt_durable_batch_is_a_durable_loss() {
    let log = log_of(3, Some(2));
    let mut l = Ledger::default();
    deliver_range(&mut l, 0..2);
    l.deliver(id(2), Err(PayloadError::Unreadable));
    l.close_cycle(&log, &recovery(R, Some(2)));
    assert_eq!(l.totals().lost_durable, 1);
    assert_eq!(l.totals().corrupt_payloads, 1);
}

#[test]
fn content_under_the_wrong_seq_and_unreported_batches_are_counted() {
    let log = log_of(3, Some(1));
    let mut l = Ledger::default();
    l.deliver(id(0), Ok(100));
    l.deliver(id(1), Ok(777)); // the writer reported counter 101 for seq 1
    l.deliver(id(2), Ok(102));
    l.deliver(id(3), Ok(103)); // written, killed before its line
    l.close_cycle(&log, &recovery(R, Some(3)));
    let t = l.totals();
    assert_eq!(t.content_mismatches, 1);
    assert_eq!(t.unreported_deliveries, 1);
    assert_eq!(t.lost_durable + t.lost_before_fsync + t.lost_unaccounted, 0);
}

#[test]
fn recovery_of_another_run_or_a_kill_before_the_announcement() {
    let log = log_of(3, Some(1));
    let mut l = Ledger::default();
    deliver_range(&mut l, 0..3);
    l.close_cycle(&log, &recovery(R + 1, Some(2)));
    assert_eq!(l.totals().run_mismatches, 1);
    assert_eq!(l.totals().durable_end_short, 1, "no durable end for run R");

    let mut l = Ledger::default();
    l.close_cycle(&CycleLog::default(), &Recovery::default());
    assert_eq!(l.totals().kills, 1);
    assert_eq!(l.totals().kills_before_announce, 1);
}

#[test]
fn xorshift_stays_in_range_and_repeats_from_its_seed() {
    let mut a = XorShift::new(12345);
    let mut b = XorShift::new(12345);
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..10_000 {
        let v = a.range(20, 300);
        assert!((20..=300).contains(&v));
        assert_eq!(v, b.range(20, 300));
        seen.insert(v);
    }
    assert_eq!(seen.len(), 281, "every value of the range comes up");
    assert_ne!(XorShift::new(0).next_u64(), 0);
}

#[test]
fn writer_then_receiver_in_process_account_for_every_batch() {
    let d = tempfile::tempdir().expect("tmp");
    let mut out = Vec::new();
    crash_writer(
        &CrashWriterOptions {
            dir: d.path().to_owned(),
            counter_base: 1 << 32,
            batch_bytes: 4096,
            flush: Duration::from_millis(5),
            every: Duration::from_millis(1),
            max_time: Duration::from_millis(30),
        },
        &mut out,
    )
    .expect("writer runs");
    let mut log = CycleLog::default();
    for line in String::from_utf8(out).expect("utf-8").lines() {
        log.feed(line);
    }
    assert_eq!(log.unparsed, 0);
    let run = log.run.expect("announced");
    let n = log.appended.len() as u64;
    assert!(n >= 1);
    assert!(
        log.appended
            .iter()
            .enumerate()
            .all(|(i, a)| a.seq == i as u64 && a.counter == (1 << 32) + i as u64),
        "seqs from 0 without holes, counters from the base"
    );
    assert_eq!(
        log.last_durable,
        Some(n - 1),
        "the writer ends with a commit"
    );

    let mut l = Ledger::default();
    let rec = receive(d.path(), &mut l).expect("receive");
    assert_eq!(rec.previous_run, Some(run));
    l.close_cycle(&log, &rec);
    let t = l.totals().clone();
    assert_eq!(t.batches_recovered, n);
    assert_eq!(t.batches_appended, n);
    assert_eq!(
        (t.lost_durable, t.lost_before_fsync, t.lost_unaccounted),
        (0, 0, 0)
    );
    assert_eq!((t.duplicates_after_dedup, t.corrupt_payloads), (0, 0));

    // Everything was acknowledged: a second receiver pass delivers nothing.
    let rec = receive(d.path(), &mut l).expect("receive again");
    assert_eq!(rec.undelivered, 0);
    assert_eq!(l.totals().batches_recovered, n);
}
