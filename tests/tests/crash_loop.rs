//! Crash loop: the real daemon (1 kHz × 100 channels, three links) is SIGKILLed at random moments
//! and restarted, against a real Mosquitto (persistence on) and the real receiver. At the end the
//! receiver must hold every batch that was durable when its run died exactly once, and every
//! identity must be accounted for: arrived, or lost in a crash before its fsync (bounded).
//!
//! The kill moments come from a seed printed at the start; `PITLINK_CRASH_SEED=<n>` replays it.

use anyhow::{Context, Result, bail, ensure};
use nix::sys::signal::Signal;
use pitlink::bench::crash::{XorShift, clock_seed};
use pitlink::config::Config;
use sensor_drivers::synthetic::Waveform;
use serde::Deserialize;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::io::BufRead;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::time::{Duration, Instant};
use system_tests::*;

const VEHICLE: &str = "car-crash";
const KILLS: u32 = 10;
/// How long a daemon runs, once it is up and delivering, before it is killed (uniform).
const MIN_LIFE_MS: u64 = 300;
const MAX_LIFE_MS: u64 = 1500;
/// A kill may lose at most this many flush intervals' worth of appends (see `lost_bound`).
const LOST_FLUSH_INTERVALS: u64 = 3;

/// 2 × 50 channels at 1 kHz.
const SOURCES: [Synth; 2] = [
    Synth {
        name: "engine",
        channels: 50,
        rate_hz: 1000,
        waveform: "sine",
    },
    Synth {
        name: "chassis",
        channels: 50,
        rate_hz: 1000,
        waveform: "noise",
    },
];

fn waveform_of(source: &str) -> Option<(u8, Waveform)> {
    match source {
        "engine" => Some((0, Waveform::Sine)),
        "chassis" => Some((1, Waveform::Noise)),
        _ => None,
    }
}

fn seed() -> Result<u64> {
    match std::env::var("PITLINK_CRASH_SEED") {
        Ok(s) => s
            .trim()
            .parse()
            .with_context(|| format!("PITLINK_CRASH_SEED={s}: not an unsigned integer")),
        Err(_) => Ok(clock_seed()),
    }
}

/// Upper bound of the batches one kill may lose before their fsync, from the configuration alone:
/// every source closes a batch per window, a group commit runs every flush interval, and a kill
/// may land a few intervals after the last commit that completed.
fn lost_bound(cfg: &Config) -> u64 {
    let per_flush = (cfg.queue.flush_ms.div_ceil(cfg.batch.window_ms)).max(1);
    cfg.sources.len() as u64 * per_flush * LOST_FLUSH_INTERVALS
}

/// One line of the receiver's output: a sample, or a `run` / `gap` event.
#[derive(Debug, Deserialize)]
struct OutLine<'a> {
    #[serde(borrow)]
    event: Option<&'a str>,
    vehicle: &'a str,
    run: u32,
    seq: u64,
    #[serde(borrow)]
    source: Option<&'a str>,
    ch: Option<u16>,
    t_us: u64,
    v: Option<f64>,
    previous_run: Option<u32>,
    previous_durable_last_seq: Option<u64>,
}

/// What the output file says about one run.
#[derive(Debug, Default)]
struct RunSeen {
    seqs: BTreeSet<u64>,
    samples: u64,
    /// From the run's own `run` event: (previous run, its durable end).
    announced: Option<(Option<u32>, Option<u64>)>,
}

/// What the output file holds, checked line by line as it is read.
#[derive(Debug, Default)]
struct Output {
    runs: BTreeMap<u32, RunSeen>,
    /// (run, source, channel, t_us) of every sample line.
    samples: Vec<(u32, u8, u16, u64)>,
    gap_events: u64,
}

fn read_output(path: &Path) -> Result<Output> {
    let f = std::fs::File::open(path).with_context(|| path.display().to_string())?;
    let mut o = Output::default();
    let mut buf = String::new();
    let mut r = std::io::BufReader::with_capacity(1 << 20, f);
    let mut n = 0u64;
    loop {
        buf.clear();
        if r.read_line(&mut buf)? == 0 {
            break;
        }
        n += 1;
        let l: OutLine = serde_json::from_str(buf.trim_end())
            .with_context(|| format!("output line {n}: {buf}"))?;
        ensure!(l.vehicle == VEHICLE, "line {n}: vehicle {}", l.vehicle);
        let run = o.runs.entry(l.run).or_default();
        run.seqs.insert(l.seq);
        match l.event {
            Some("run") => {
                ensure!(l.seq == 0, "line {n}: a run event at seq {}", l.seq);
                run.announced = Some((l.previous_run, l.previous_durable_last_seq));
            }
            Some("gap") => o.gap_events += 1,
            Some(e) => bail!("line {n}: unknown event {e}"),
            None => {
                let (Some(src), Some(ch)) = (l.source, l.ch) else {
                    bail!("line {n}: a sample line without source or channel: {buf}");
                };
                let (idx, wf) =
                    waveform_of(src).with_context(|| format!("line {n}: source {src}"))?;
                let want = wf.value(ch, l.t_us);
                ensure!(
                    l.v.map(f64::to_bits) == Some(want.to_bits()),
                    "line {n}: {src}/{ch} at {} is {:?}, the waveform says {want}",
                    l.t_us,
                    l.v
                );
                run.samples += 1;
                o.samples.push((l.run, idx, ch, l.t_us));
            }
        }
    }
    Ok(o)
}

/// The status once run `run` is up and has had batches acknowledged.
fn wait_delivering(d: &mut Proc, socket: &Path, run: u32) -> Result<Status> {
    wait_status(
        d,
        socket,
        Duration::from_secs(20),
        &format!("run {run} up and delivering"),
        |s| s.queue.stats.run == run && s.queue.stats.delivered_batches > 0,
    )
}

fn u(v: &Value, key: &str) -> Result<u64> {
    v[key]
        .as_u64()
        .with_context(|| format!("no number '{key}' in {v}"))
}

#[test]
fn sigkill_loop_at_1khz_100_channels_delivers_every_durable_batch_once() -> Result<()> {
    let started = Instant::now();
    let seed = seed()?;
    println!("crash loop: seed {seed} (replay: PITLINK_CRASH_SEED={seed})");
    let mut rng = XorShift::new(seed);

    let dir = tempfile::tempdir()?;
    let broker = Mosquitto::start(
        &dir.path().join("broker"),
        BrokerOptions {
            persistence: true,
            ..BrokerOptions::default()
        },
    )?;
    let out = dir.path().join("received.jsonl");
    // Stopped at the very end, once its output is quiet: pauses between daemons do not end it.
    let mut rx = start_receiver(dir.path(), broker.socket(), &out, "10m")?;
    let cfg_path = write_config(
        dir.path(),
        VEHICLE,
        broker.socket(),
        &["wwan0", "wwan1", "wwan2"],
        &SOURCES,
    )?;
    let cfg = Config::load(&cfg_path)?;
    let diag = cfg.diag.socket.clone();
    let log_of = |run: u32| dir.path().join(format!("daemon-{run}.log"));

    // A fresh queue: the runs are 1, 2, … in start order.
    let mut lives = Vec::new();
    for run in 1..=KILLS {
        let mut d = spawn_daemon(&cfg_path, &log_of(run))?;
        wait_delivering(&mut d, &diag, run)?;
        let life = rng.range(MIN_LIFE_MS, MAX_LIFE_MS);
        lives.push(life);
        std::thread::sleep(Duration::from_millis(life));
        d.signal(Signal::SIGKILL);
        let st = d.wait_exit(Duration::from_secs(10))?;
        ensure!(
            st.signal() == Some(Signal::SIGKILL as i32),
            "run {run}: the daemon ended by itself ({st}), not by the kill:\n{}",
            d.log_text()
        );
    }
    println!("crash loop: killed after {lives:?} ms of delivery");

    // Once more, to the end: deliver the backlog, run live for a while, stop gracefully.
    let last_run = KILLS + 1;
    let mut d = spawn_daemon(&cfg_path, &log_of(last_run))?;
    let st = wait_delivering(&mut d, &diag, last_run)?;
    let backlog = st.queue.recovery.undelivered;
    // The backlog is older than this daemon: once the oldest undelivered batch is not, it is out.
    wait_status(
        &mut d,
        &diag,
        Duration::from_secs(30),
        "the backlog delivered",
        |s| {
            s.queue
                .stats
                .oldest_undelivered_us
                .is_none_or(|t| t >= s.started_us)
        },
    )?;
    std::thread::sleep(Duration::from_secs(1));
    let end = stop_daemon(&mut d, Duration::from_secs(20))?;
    let dlog = d.log_text();
    assert_eq!(
        (end.undelivered, end.dropped),
        (0, 0),
        "the graceful stop drained everything: {end:?}\n{dlog}"
    );
    let closing = |k: &str| log_field(&dlog, "core stopped", k).context(k.to_string());
    let (appended, delivered) = (closing("appended")?, closing("delivered")?);
    let recovered = log_field(&dlog, "queue recovered", "undelivered")
        .context("no undelivered= in the recovery log line")?;
    assert_eq!(
        recovered, backlog,
        "the recovery log line and the status agree"
    );
    assert_eq!(
        delivered,
        appended + recovered,
        "the last daemon delivered its own batches and the whole backlog, each once"
    );

    stop_receiver_when_quiet(&mut rx, &out, Duration::from_millis(1500))?;
    let summary = receiver_summary(&rx)?;
    assert_eq!(u(&summary, "bad_payloads")?, 0, "{summary}");
    let v = &summary["vehicles"][VEHICLE];
    ensure!(v.is_object(), "no summary for {VEHICLE}: {summary}");

    // The receiver's accounting.
    assert_eq!(u(v, "missing_batches")?, 0, "nothing missing: {v}");
    assert_eq!(
        u(v, "evicted_batches")?,
        0,
        "the cap was never reached: {v}"
    );
    assert_eq!(u(v, "gap_notices")?, 0, "{v}");
    assert_eq!(
        u(v, "run_announcements")?,
        u64::from(last_run),
        "every start announced its run: {v}"
    );
    let runs = v["runs"].as_array().context("runs")?;
    let nums: Vec<u64> = runs.iter().map(|r| u(r, "run")).collect::<Result<_>>()?;
    assert_eq!(
        nums,
        (1..=u64::from(last_run)).collect::<Vec<_>>(),
        "one entry per start"
    );

    // The output file, read independently of the summary.
    let o = read_output(&out)?;
    assert_eq!(o.gap_events, 0);
    assert_eq!(
        o.samples.len() as u64,
        u(v, "samples")?,
        "the summary counts the sample lines written"
    );

    let bound = lost_bound(&cfg);
    let mut lost_total = 0;
    let mut lost_per_run = Vec::new();
    for r in runs {
        let run = u32::try_from(u(r, "run")?)?;
        let seen = o
            .runs
            .get(&run)
            .with_context(|| format!("nothing of run {run} in the output"))?;
        assert_eq!(r["announced"], true, "run {run}: {r}");
        let max_seq = u(r, "max_seq")?;
        assert_eq!(
            seen.seqs.last().copied(),
            Some(max_seq),
            "run {run}: highest seq in the output vs summary"
        );
        assert_eq!(
            seen.seqs.len() as u64,
            u(r, "batches")?,
            "run {run}: distinct batches in the output vs summary"
        );
        assert_eq!(u(r, "missing_batches")?, 0, "run {run}: {r}");
        // Its own announcement: the previous run and where that one durably ended.
        let announced = seen.announced.context("run event")?;
        if run == 1 {
            assert_eq!(announced, (None, None), "a fresh queue has no previous run");
        } else {
            assert_eq!(
                announced.0,
                Some(run - 1),
                "run {run} follows run {}",
                run - 1
            );
        }
        let lost = u(r, "lost_in_crash_batches")?;
        if run == last_run {
            // Stopped gracefully: nothing ended it, everything it appended arrived.
            ensure!(r.get("ended_by_run").is_none(), "run {run}: {r}");
            assert_eq!(lost, 0, "run {run}: {r}");
            assert_eq!(
                max_seq + 1,
                appended,
                "run {run}: every appended batch arrived"
            );
            continue;
        }
        // Killed: the next run announced its durable end; everything up to it arrived.
        assert_eq!(r["ended_by_run"], run + 1, "run {run}: {r}");
        let next = o.runs.get(&(run + 1)).context("next run")?;
        let durable = next
            .announced
            .and_then(|a| a.1)
            .with_context(|| format!("run {}: no durable end announced for run {run}", run + 1))?;
        assert_eq!(
            r["lost_in_crash_after_seq"], durable,
            "run {run}: the summary uses the announced durable end"
        );
        let holes: Vec<u64> = (0..=durable).filter(|s| !seen.seqs.contains(s)).collect();
        assert!(
            holes.is_empty(),
            "run {run}: durable up to seq {durable} but these never arrived: {holes:?}"
        );
        // Every identity up to the highest one seen: arrived, or lost in the crash.
        assert_eq!(
            seen.seqs.len() as u64 + lost,
            max_seq.max(durable) + 1,
            "run {run}: arrived + lost in crash covers 0..={max_seq}"
        );
        assert!(
            lost <= bound,
            "run {run}: {lost} batches lost in the crash, more than {bound} ({LOST_FLUSH_INTERVALS} flush intervals of {} sources)",
            cfg.sources.len()
        );
        lost_per_run.push(lost);
        lost_total += lost;
    }
    assert_eq!(u(v, "lost_in_crash_batches")?, lost_total, "{v}");

    // Every sample exactly once, across runs too; each channel of a run a gapless grid unless
    // that run lost batches in its crash.
    let mut by_sample = o.samples;
    by_sample.sort_unstable_by_key(|&(run, src, ch, t)| (src, ch, t, run));
    for w in by_sample.windows(2) {
        let (a, b) = (w[0], w[1]);
        assert!(
            (a.1, a.2, a.3) != (b.1, b.2, b.3),
            "source {} channel {} at {} written twice (runs {} and {})",
            a.1,
            a.2,
            a.3,
            a.0,
            b.0
        );
    }
    by_sample.sort_unstable();
    let lossless: BTreeSet<u32> = runs
        .iter()
        .filter(|r| r["lost_in_crash_batches"] == 0)
        .filter_map(|r| r["run"].as_u64().and_then(|x| u32::try_from(x).ok()))
        .collect();
    for w in by_sample.windows(2) {
        let (a, b) = (w[0], w[1]);
        if (a.0, a.1, a.2) == (b.0, b.1, b.2) && lossless.contains(&a.0) {
            assert_eq!(
                b.3 - a.3,
                1000,
                "run {} source {} channel {}: gap between {} and {}",
                a.0,
                a.1,
                a.2,
                a.3,
                b.3
            );
        }
    }
    let last_samples = o.runs.get(&last_run).map_or(0, |r| r.samples);
    assert_eq!(
        last_samples, end.generated,
        "the last run: every generated sample arrived"
    );

    println!(
        "crash loop: seed {seed}; {} runs, {} samples, {} batches ({} duplicate batches, {} duplicate samples dropped); lost in crash: {lost_total} batches (per killed run {lost_per_run:?}, bound {bound}); backlog at the last start {backlog}; {:.1} s",
        last_run,
        u(v, "samples")?,
        u(v, "batches")?,
        u(v, "duplicate_batches")?,
        u(v, "duplicate_samples")?,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
