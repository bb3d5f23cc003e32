//! The core loop: owns the batchers, the queue and the scheduler; all decisions happen here or
//! in the sans-IO structs it drives. Runs on its own thread (see the module above).

use crate::batch::Batcher;
use crate::bond::link::{LinkCmd, LinkEvent};
use crate::bond::scheduler::{Action, Scheduler, SchedulerConfig};
use crate::codec::{self, BatchId, HeartbeatBody, Kind, RunBody};
use crate::config::{Config, SourceKind};
use crate::daemon::radio::RadioShared;
use crate::diag::{LinkMetrics, LinkStatus, QueueStatus, SourceStatus, Status};
use crate::queue::{BatchMeta, DiskFile, DiskStore, Queue, Recovery, SyncDone, SyncJob};
use crate::towers::map::Fix;
use sensor_drivers::{Chunk, Reading, SourceStats};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

/// Recently appended payloads kept in memory so live batches are sent without a disk read.
const CACHE_BYTES: usize = 32 << 20;
const TICK: Duration = Duration::from_millis(5);
const STATUS_EVERY: Duration = Duration::from_millis(100);

pub struct Core {
    cfg: Config,
    queue: Queue,
    recovery: Recovery,
    sources: Vec<Arc<SourceStats>>,
    batchers: Vec<Batcher<Reading>>,
    links: Vec<mpsc::Sender<LinkCmd>>,
    link_errors: Vec<Option<String>>,
    sched: Scheduler,
    cache: BTreeMap<BatchId, Arc<Vec<u8>>>,
    cache_bytes: usize,
    status_tx: watch::Sender<Status>,
    started_us: u64,
    last_rate: (u64, Vec<u64>),
    rates: Vec<f64>,
    drain_timeout: Duration,
    /// Group commits run on their own thread, so appends never wait for an fdatasync.
    sync_jobs: Option<std::sync::mpsc::Sender<SyncJob<DiskStore>>>,
    sync_pending: bool,
    /// Backfill pauses briefly after a read error instead of retrying every tick.
    backfill_paused_until: u64,
    /// What the modems report (radio bands, per-link radio, towers).
    radio: Arc<RadioShared>,
    /// The radio bands last given to the scheduler.
    bands: Vec<Option<crate::bond::scheduler::RadioBand>>,
    /// The car's position from the NMEA sources, for the tower policy.
    gps: watch::Sender<Option<Fix>>,
    /// The fix being assembled from an NMEA source's channels.
    fix: PartialFix,
    /// Live readings for `pitlink tail` (sent only while someone listens).
    tail: tokio::sync::broadcast::Sender<crate::diag::TailChunk>,
    /// The broker address of links without one of their own (for the status).
    broker_addr: String,
    /// Per-batch events for benchmarks and tests.
    trace: Option<mpsc::UnboundedSender<super::TraceEvent>>,
}

/// Latitude, longitude, speed and course as they arrive on an NMEA source's channels.
#[derive(Debug, Clone, Copy, Default)]
struct PartialFix {
    lat: Option<f64>,
    lon: Option<f64>,
    speed_mps: f64,
    course_deg: f64,
}

impl std::fmt::Debug for Core {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Core")
            .field("vehicle", &self.cfg.vehicle)
            .finish()
    }
}

impl Core {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        cfg: Config,
        queue: Queue,
        recovery: Recovery,
        sources: Vec<Arc<SourceStats>>,
        links: Vec<mpsc::Sender<LinkCmd>>,
        status_tx: watch::Sender<Status>,
        max_in_flight: usize,
        drain_timeout: Duration,
        radio: Arc<RadioShared>,
        gps: watch::Sender<Option<Fix>>,
        tail: tokio::sync::broadcast::Sender<crate::diag::TailChunk>,
        trace: Option<mpsc::UnboundedSender<super::TraceEvent>>,
    ) -> Self {
        let window_us = cfg.batch.window_ms * 1000;
        let batchers = cfg
            .sources
            .iter()
            .map(|_| Batcher::new(window_us, cfg.batch.max_samples))
            .collect();
        let defaults = SchedulerConfig::default();
        let sched = Scheduler::new(
            SchedulerConfig {
                max_in_flight,
                live_window_us: 2 * window_us + 200_000,
                // Format version 1 has no heartbeat envelope: no heartbeats then.
                heartbeat_idle_us: if cfg.batch.format_version >= 2 {
                    defaults.heartbeat_idle_us
                } else {
                    0
                },
                ..defaults
            },
            links.len(),
        );
        let n_sources = sources.len();
        let broker_addr = crate::mqtt::from_config(&cfg.broker)
            .map(|(a, _)| a.to_string())
            .unwrap_or_default();
        let n_links = links.len();
        Core {
            cfg,
            queue,
            recovery,
            sources,
            batchers,
            links,
            link_errors: vec![None; n_links],
            sched,
            cache: BTreeMap::new(),
            cache_bytes: 0,
            status_tx,
            started_us: crate::now_us(),
            last_rate: (crate::now_us(), vec![0; n_sources]),
            rates: vec![0.0; n_sources],
            drain_timeout,
            sync_jobs: None,
            sync_pending: false,
            backfill_paused_until: 0,
            radio,
            bands: vec![None; n_links],
            gps,
            fix: PartialFix::default(),
            tail,
            broker_addr,
            trace,
        }
    }

    /// Reports a batch event when tracing is on.
    fn trace(&self, ev: impl FnOnce() -> super::TraceEvent) {
        if let Some(t) = &self.trace {
            let _ = t.send(ev());
        }
    }

    /// Starts the group-commit thread; its results come back on the returned channel.
    fn start_syncer(&mut self) -> mpsc::UnboundedReceiver<SyncDone<DiskFile>> {
        let (done_tx, done_rx) = mpsc::unbounded_channel();
        match crate::queue::spawn_committer::<DiskStore>(move |d| done_tx.send(d).is_ok()) {
            Ok(jobs) => self.sync_jobs = Some(jobs),
            // Without the thread, group commits run inline (see `sync`).
            Err(e) => {
                tracing::warn!("cannot start the group-commit thread ({e}); committing inline")
            }
        }
        done_rx
    }

    pub async fn run(
        mut self,
        mut samples: mpsc::Receiver<Chunk>,
        mut events: mpsc::Receiver<LinkEvent>,
        shutdown: CancellationToken,
    ) -> anyhow::Result<()> {
        // The backlog from earlier runs stays in the queue; the scheduler reads it from there.
        let mut sync_done = self.start_syncer();
        let now = crate::now_us();
        let body = RunBody {
            previous_run: self.recovery.previous_run,
            previous_durable_last_seq: self.recovery.previous_durable_last_seq,
        };
        let vehicle = self.cfg.vehicle.clone();
        let version = self.cfg.batch.format_version;
        self.append(
            BatchMeta {
                samples: 0,
                t_first_us: now,
                t_last_us: now,
            },
            false,
            |id| {
                codec::encode_version(
                    &codec::control_envelope(&vehicle, id, Kind::Run, now, &body),
                    version,
                )
            },
        );

        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut flush = tokio::time::interval(Duration::from_millis(self.cfg.queue.flush_ms));
        flush.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut status = tokio::time::interval(STATUS_EVERY);
        let mut sources_open = true;
        let mut drain_deadline: Option<tokio::time::Instant> = None;

        loop {
            tokio::select! {
                chunk = samples.recv(), if sources_open => match chunk {
                    Some(c) => self.on_chunk(c),
                    None => {
                        // Every source has stopped: close their batches and start draining.
                        sources_open = false;
                        self.close_all_batches();
                        self.start_sync();
                        drain_deadline = Some(tokio::time::Instant::now() + self.drain_timeout);
                        tracing::info!(
                            "sources stopped; draining {} undelivered batches (at most {:?})",
                            self.queue.stats().undelivered,
                            self.drain_timeout
                        );
                    }
                },
                ev = events.recv() => match ev {
                    Some(ev) => self.on_link_event(ev),
                    None => break,
                },
                _ = tick.tick() => {
                    let now = crate::now_us();
                    for i in 0..self.batchers.len() {
                        if let Some(b) = self.batchers[i].poll(now) {
                            self.commit(i, b);
                        }
                    }
                    self.dispatch(now);
                    if let Some(d) = drain_deadline
                        && (self.queue.undelivered_count() == 0 || tokio::time::Instant::now() >= d)
                    {
                        break;
                    }
                }
                Some(done) = sync_done.recv() => self.finish_sync(done),
                _ = flush.tick() => self.start_sync(),
                _ = status.tick() => self.publish_status(),
                // Shutdown only stops the sources; the core notices when their channel closes.
                _ = shutdown.cancelled(), if sources_open && !shutdown.is_cancelled() => {}
            }
        }
        // Let a running group commit finish, then make everything durable.
        if self.sync_pending
            && let Some(done) = sync_done.recv().await
        {
            self.finish_sync(done);
        }
        self.sync_jobs = None;
        if let Err(e) = self.queue.sync() {
            tracing::error!("queue fsync failed: {e}");
        }
        self.publish_status();
        let st = self.queue.stats();
        let generated: u64 = self.sources.iter().map(|s| s.readings() + s.drops()).sum();
        let dropped: u64 = self.sources.iter().map(|s| s.drops()).sum();
        tracing::info!(
            generated,
            dropped,
            appended = st.appended_batches,
            notices = st.notices_written,
            seqs = st.next_seq,
            delivered = st.delivered_batches,
            undelivered = st.undelivered,
            evicted = st.evicted_batches,
            "core stopped; undelivered batches stay queued for the next start"
        );
        Ok(())
    }

    fn on_chunk(&mut self, c: Chunk) {
        if self.tail.receiver_count() > 0 {
            let _ = self.tail.send(crate::diag::TailChunk {
                source: c.source,
                readings: Arc::new(c.readings.clone()),
            });
        }
        if self
            .cfg
            .sources
            .get(c.source)
            .is_some_and(|s| s.kind == SourceKind::Nmea)
        {
            self.track_position(&c.readings);
        }
        let closed = match self.batchers.get_mut(c.source) {
            Some(b) => b.push(&c.readings, c.at_us),
            None => return,
        };
        for b in closed {
            self.commit(c.source, b);
        }
    }

    /// Follows an NMEA source's latitude, longitude, speed and course channels and publishes
    /// each complete fix for the tower policy.
    fn track_position(&mut self, readings: &[Reading]) {
        use sensor_drivers::nmea::channel;
        let mut changed = false;
        for r in readings {
            if let Reading::Value(s) = r {
                match s.channel {
                    channel::LATITUDE => self.fix.lat = Some(s.value),
                    channel::LONGITUDE => self.fix.lon = Some(s.value),
                    channel::SPEED => self.fix.speed_mps = s.value,
                    channel::COURSE => self.fix.course_deg = s.value,
                    _ => continue,
                }
                changed = true;
            }
        }
        if changed && let (Some(lat), Some(lon)) = (self.fix.lat, self.fix.lon) {
            self.gps.send_replace(Some(Fix {
                lat,
                lon,
                speed_mps: self.fix.speed_mps,
                heading_deg: self.fix.course_deg,
            }));
        }
    }

    /// Gives the scheduler the radio band of each link's modem when it changes.
    fn follow_radio(&mut self, st: &crate::daemon::radio::RadioState) {
        for (i, r) in st.links.iter().enumerate() {
            let band = r.as_ref().and_then(|r| r.quality);
            if let Some(b) = band
                && self.bands.get(i) != Some(&Some(b))
            {
                self.sched.radio(i, b);
                self.bands[i] = Some(b);
            }
        }
    }

    fn close_all_batches(&mut self) {
        for i in 0..self.batchers.len() {
            if let Some(b) = self.batchers[i].flush() {
                self.commit(i, b);
            }
        }
    }

    /// Encodes and queues one closed batch of source `source`.
    fn commit(&mut self, source: usize, samples: Vec<Reading>) {
        if samples.is_empty() {
            return;
        }
        let name = self.cfg.sources[source].name.clone();
        let critical = self.cfg.sources[source].critical;
        let vehicle = self.cfg.vehicle.clone();
        let meta = BatchMeta::of_readings(&samples);
        let version = self.cfg.batch.format_version;
        self.append(meta, critical, |id| {
            codec::encode_version(
                &codec::data_envelope_for(version, &vehicle, id, &name, &samples),
                version,
            )
        });
    }

    /// Appends to the queue and registers the batch with the scheduler, together with the gap
    /// notices the queue wrote (for batches the disk cap evicted, or found damaged); evicted
    /// batches are forgotten.
    fn append(&mut self, meta: BatchMeta, critical: bool, encode: impl FnOnce(BatchId) -> Vec<u8>) {
        let (res, gone) = self.queue.append(meta, encode);
        let now = crate::now_us();
        if let Some((id, payload)) = res {
            self.trace(|| super::TraceEvent::Queued {
                id,
                at_us: now,
                samples: meta.samples,
                bytes: payload.len() as u64,
            });
            self.sched.add(id, now, payload.len() as u64, critical);
            self.cache_put(id, payload);
        }
        for g in gone {
            for &(s, e) in &g.seqs {
                for seq in s..e {
                    let id = BatchId { run: g.run, seq };
                    self.sched.forget(id);
                    self.cache_remove(id);
                }
            }
        }
        for (id, payload) in self.queue.take_notices() {
            self.trace(|| super::TraceEvent::Queued {
                id,
                at_us: now,
                samples: 0,
                bytes: payload.len() as u64,
            });
            self.sched.add(id, now, payload.len() as u64, false);
            self.cache_put(id, payload);
        }
        if self.queue.wants_sync() {
            self.start_sync();
        }
    }

    fn cache_put(&mut self, id: BatchId, payload: Vec<u8>) {
        self.cache_bytes += payload.len();
        self.cache.insert(id, Arc::new(payload));
        while self.cache_bytes > CACHE_BYTES {
            match self.cache.pop_first() {
                Some((_, p)) => self.cache_bytes -= p.len(),
                None => break,
            }
        }
    }

    fn cache_remove(&mut self, id: BatchId) {
        if let Some(p) = self.cache.remove(&id) {
            self.cache_bytes -= p.len();
        }
    }

    fn dispatch(&mut self, now: u64) {
        struct Send {
            link: usize,
            id: BatchId,
        }
        let queue = &self.queue;
        let paused = now < self.backfill_paused_until;
        let actions = self.sched.poll(now, |skip| {
            if paused {
                None
            } else {
                queue.oldest_undelivered(skip)
            }
        });
        for action in actions {
            let send = match action {
                Action::Send { link, id } => Send { link, id },
                Action::Heartbeat { link, seq } => {
                    self.heartbeat(link, seq, now);
                    continue;
                }
            };
            let payload = match self.cache.get(&send.id) {
                Some(p) => Some(p.clone()),
                None => match self.queue.read(send.id) {
                    Ok(p) => p.map(Arc::new),
                    Err(e) => {
                        tracing::warn!(
                            "cannot read batch {} back from the queue: {e}; backfill pauses for 1 s",
                            send.id
                        );
                        self.backfill_paused_until = now + 1_000_000;
                        None
                    }
                },
            };
            let Some(payload) = payload else {
                // Delivered or evicted meanwhile (or unreadable): nothing to send.
                self.sched.forget(send.id);
                continue;
            };
            // Backlog batches were placed with an assumed size.
            let bytes = payload.len() as u64;
            self.sched.sized(send.id, bytes);
            let cmd = LinkCmd::Publish {
                id: send.id,
                payload,
            };
            if self.links[send.link].try_send(cmd).is_err() {
                // The link task is gone or swamped: treat the link as down; its batches move.
                self.sched.link_down(send.link);
            } else {
                self.trace(|| super::TraceEvent::Sent {
                    link: send.link,
                    id: send.id,
                    at_us: now,
                    bytes,
                });
            }
        }
    }

    /// Publishes the heartbeat `seq` the scheduler asked for on `link`: a `Heartbeat` envelope
    /// telling the receiver the run's next sequence number and the backlog.
    fn heartbeat(&mut self, link: usize, seq: u64, now: u64) {
        let next_seq = self.queue.stats().next_seq;
        let body = HeartbeatBody {
            next_seq,
            backlog_batches: self.queue.undelivered_count(),
        };
        let id = BatchId {
            run: self.queue.run(),
            seq: next_seq,
        };
        let env = codec::control_envelope(&self.cfg.vehicle, id, Kind::Heartbeat, now, &body);
        let payload = Arc::new(codec::encode_version(&env, self.cfg.batch.format_version));
        if self.links[link]
            .try_send(LinkCmd::Heartbeat { seq, payload })
            .is_err()
        {
            self.sched.link_down(link);
        }
    }

    fn on_link_event(&mut self, ev: LinkEvent) {
        match ev {
            LinkEvent::Up { link } => {
                self.sched.link_up(link);
                if let Some(e) = self.link_errors.get_mut(link) {
                    *e = None;
                }
            }
            LinkEvent::Down { link, reason } => {
                self.sched.link_down(link);
                if let Some(e) = self.link_errors.get_mut(link) {
                    *e = Some(reason);
                }
            }
            LinkEvent::Acked { link, id } => {
                let now = crate::now_us();
                self.trace(|| super::TraceEvent::Acked {
                    link,
                    id,
                    at_us: now,
                });
                self.sched.acked(link, id, now);
                self.queue.ack(id);
                self.cache_remove(id);
            }
            LinkEvent::HeartbeatAcked { link, seq } => {
                self.sched.heartbeat_acked(link, seq, crate::now_us());
            }
        }
    }

    /// Starts a group commit on the sync thread (or inline without one) unless one is running.
    fn start_sync(&mut self) {
        if self.sync_pending {
            return;
        }
        let Some(job) = self.queue.begin_sync() else {
            return;
        };
        match &self.sync_jobs {
            Some(tx) => match tx.send(job) {
                Ok(()) => self.sync_pending = true,
                Err(std::sync::mpsc::SendError(job)) => {
                    let done = job.run();
                    self.finish_sync(done);
                }
            },
            None => {
                let done = job.run();
                self.finish_sync(done);
            }
        }
    }

    fn finish_sync(&mut self, done: SyncDone<DiskFile>) {
        self.sync_pending = false;
        // A failure is counted and logged (once per episode) by the queue, and retried.
        let _ = self.queue.finish_sync(done);
    }

    fn publish_status(&mut self) {
        let now = crate::now_us();
        let dt = now.saturating_sub(self.last_rate.0) as f64 / 1e6;
        if dt >= 1.0 {
            for (i, s) in self.sources.iter().enumerate() {
                let n = s.readings();
                self.rates[i] = n.saturating_sub(self.last_rate.1[i]) as f64 / dt;
                self.last_rate.1[i] = n;
            }
            self.last_rate.0 = now;
        }
        // One snapshot of the modems' side per status: the scheduler's radio bands and the
        // radio shown in the status come from the same reading.
        let radio = self.radio.snapshot();
        self.follow_radio(&radio);
        let status = Status {
            towers: radio.towers,
            vehicle: self.cfg.vehicle.clone(),
            pid: std::process::id(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            started_us: self.started_us,
            now_us: now,
            sources: self
                .cfg
                .sources
                .iter()
                .zip(&self.sources)
                .enumerate()
                .map(|(i, (c, s))| SourceStatus {
                    name: c.name.clone(),
                    kind: c.kind.name().into(),
                    device: c.describe(),
                    counters: s.snapshot(),
                    readings_per_s: self.rates[i],
                })
                .collect(),
            queue: QueueStatus {
                dir: self.queue.dir().to_owned(),
                stats: self.queue.stats(),
                unsent: self.sched.unsent() as u64,
                recovery: self.recovery.clone(),
            },
            links: self
                .cfg
                .links
                .iter()
                .enumerate()
                .map(|(i, l)| {
                    LinkStatus::new(
                        &l.name,
                        l.interface.as_deref(),
                        self.sched.state(i),
                        self.sched.in_flight(i),
                        self.sched.counters(i),
                        self.link_errors[i].clone(),
                    )
                    .with_metrics(LinkMetrics::of(&self.sched, i))
                    .with_radio(radio.links.get(i).cloned().flatten())
                    .with_address(Some(
                        l.address
                            .map_or_else(|| self.broker_addr.clone(), |a| a.to_string()),
                    ))
                })
                .collect(),
        };
        self.status_tx.send_replace(status);
    }
}
