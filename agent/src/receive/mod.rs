//! `pitlink receive`: the cloud side of the flow. Subscribes to the broker, drops re-sent
//! batches, writes every sample exactly once as JSON Lines, and accounts for every batch that
//! did not arrive: evicted by the car's disk cap, lost in a crash before its fsync, or still
//! missing (see `accounting.rs` for the exact rules).
//!
//! The sans-IO [`Ledger`] (per-vehicle [`Accounting`], which is also the dedup) decides; [`run`]
//! does the IO.
//!
//! With a state file (`--state`, by default `<out>.state` beside a file output) a batch is
//! acknowledged to the broker only once a snapshot of the ledger that includes it is durable,
//! together with the output's length at that moment (group commit: one snapshot per
//! [`GROUP_COMMIT`] or per [`GROUP_MAX`] messages). After a crash the output is cut back to the
//! recorded length and the broker re-delivers exactly the batches past it: every batch is in the
//! output exactly once. Without a state file (stdout by default) the ledger lives in memory, a
//! batch is acknowledged once its lines are flushed, and a restart may write re-delivered batches
//! again (at least once).
//!
//! The MQTT event loop runs in its own task and is never cancelled while a session is in use:
//! cancelling `EventLoop::poll` in the middle of writing an ack loses that ack, and a broker
//! only re-sends unacknowledged messages on the next session, so each lost ack would shrink the
//! broker's in-flight window for good.

mod accounting;
pub mod client;
pub mod csv;
mod latency;
mod ledger;
mod output;
pub mod state;
#[cfg(test)]
mod tests;

pub use accounting::{Accounting, Limits, MAX_LISTED_RANGES, RunSummary, Seen, VehicleSummary};
pub use latency::LatencyHistogram;
pub use ledger::{Batch, Content, Ledger, ReceiveSummary, Verdict};
pub use output::{Dbcs, JsonlSink, JsonlWriter, Output, SizedFile};

use crate::mqtt::{BrokerAddr, Session};
use anyhow::{Context, Result};
pub use client::MqttVersion;
use client::{AckHandle, Client, ConnErr, Ev};
use std::collections::VecDeque;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

pub const DEFAULT_TOPIC: &str = "pitlink/+/batch";
pub const DEFAULT_CLIENT_ID: &str = "pitlink-receive";

const MAX_PACKET: usize = 16 << 20;
const INFLIGHT: u16 = 100;
const KEEP_ALIVE: Duration = Duration::from_secs(5);
/// Requests (acks, subscribe) waiting for the event loop. Acks are pushed with `try_ack`, and
/// kept locally when this is full, so the writer never blocks on the event loop.
const REQUEST_CAPACITY: usize = 1024;
/// Events waiting for the writer. When full, the event loop stops reading the socket, which is
/// the backpressure we want when the output is slow.
const EVENT_CAPACITY: usize = 64;
const STATS_EVERY: Duration = Duration::from_millis(200);
/// How long an exit may wait for queued acks to reach the broker.
const EXIT_GRACE: Duration = Duration::from_secs(2);
const LOGGED_BAD_PAYLOADS: u64 = 10;
/// Small enough that lines reach the file between snapshots, so a crash leaves some to cut.
const OUT_BUFFER: usize = 64 << 10;
/// Longest wait between a message and the snapshot that releases its ack.
pub const GROUP_COMMIT: Duration = Duration::from_millis(100);
/// Messages waiting for a snapshot that trigger one at once. Below the broker's in-flight window
/// (Mosquitto: 20 by default), so that window never stalls on acks held back here.
pub const GROUP_MAX: usize = 16;

#[derive(Debug, Clone)]
pub struct ReceiveOptions {
    pub broker: BrokerAddr,
    /// MQTT topic filter, [`DEFAULT_TOPIC`] by default.
    pub topic: String,
    /// Also names the broker-side session that holds unacknowledged batches while the receiver
    /// is away: run one receiver per client id.
    pub client_id: String,
    /// JSON Lines output, appended to; `None` or `-` for stdout.
    pub out: Option<PathBuf>,
    /// CSV output directory instead of JSON Lines (see [`csv`]).
    pub csv: Option<PathBuf>,
    /// State file (dedup, accounting, output lengths); `None`: in memory only.
    pub state: Option<PathBuf>,
    /// Memory bounds of the dedup and accounting.
    pub limits: Limits,
    /// (CAN source name, DBC file): frame lines of that source get decoded signals.
    pub dbc: Vec<(String, PathBuf)>,
    pub mqtt_version: MqttVersion,
    pub tls: Option<Arc<rustls::ClientConfig>>,
    pub credentials: Option<(String, String)>,
    /// Stop after this long.
    pub duration: Option<Duration>,
    /// Stop after this long without a message, once at least one message arrived.
    pub idle_exit: Option<Duration>,
}

impl ReceiveOptions {
    pub fn new(broker: BrokerAddr) -> Self {
        ReceiveOptions {
            broker,
            topic: DEFAULT_TOPIC.to_string(),
            client_id: DEFAULT_CLIENT_ID.to_string(),
            out: None,
            csv: None,
            state: None,
            limits: Limits::default(),
            dbc: Vec::new(),
            mqtt_version: MqttVersion::V3,
            tls: None,
            credentials: None,
            duration: None,
            idle_exit: None,
        }
    }
}

/// Receives until `shutdown` is cancelled, `duration` has passed, or nothing arrived for
/// `idle_exit`; then flushes the output and returns the summary. `stats` gets the current
/// summary at most every 200 ms. Survives broker restarts; fails on unusable options, on a
/// broker that refuses the credentials or the subscription, and on output errors.
pub async fn run(
    opts: ReceiveOptions,
    shutdown: CancellationToken,
    stats: watch::Sender<ReceiveSummary>,
) -> Result<ReceiveSummary> {
    if !rumqttc::valid_filter(&opts.topic) {
        anyhow::bail!(
            "topic filter '{}' is not a valid MQTT filter (example: {DEFAULT_TOPIC})",
            opts.topic
        );
    }
    let dbcs = Dbcs::load(&opts.dbc)?;
    let saved = match &opts.state {
        Some(p) => state::load(p)?,
        None => None,
    };
    let (mut ledger, lengths) = match saved {
        Some(s) => {
            info!(state = %opts.state.as_deref().unwrap_or(Path::new("")).display(), "resuming from the saved state");
            (s.ledger, Some(s.outputs))
        }
        None => (Ledger::new(), None),
    };
    ledger.set_limits(opts.limits);
    let (out, out_name) = match &opts.csv {
        Some(dir) => (
            Box::new(csv::CsvOutput::open(dir, lengths.as_ref(), dbcs)?) as Box<dyn Output>,
            dir.display().to_string(),
        ),
        None => open_output(opts.out.as_deref(), lengths.as_ref(), dbcs)?,
    };
    let session = Session {
        addr: opts.broker.clone(),
        client_id: opts.client_id.clone(),
        keep_alive: KEEP_ALIVE,
        // The broker keeps our subscription and unacknowledged batches while we are away.
        clean_session: false,
        credentials: opts.credentials.clone(),
        tls: opts.tls.clone(),
        bind_device: None,
        max_packet: MAX_PACKET,
        inflight: INFLIGHT,
        manual_acks: true,
    };
    let (tx, mut events) = mpsc::channel(EVENT_CAPACITY);
    let (client, pump) = client::start(&session, opts.mqtt_version, REQUEST_CAPACITY, tx);
    let _pump = AbortOnDrop(pump);

    let mut rx = Shell {
        ledger,
        out,
        out_name,
        state_path: opts.state.clone(),
        held: Vec::new(),
        save_at: None,
        client,
        broker: opts.broker.to_string(),
        topic: opts.topic.clone(),
        acks: VecDeque::new(),
        subscribe_pending: false,
        connected: false,
        connects: 0,
        subscribes: 0,
        bad_logged: 0,
        outage_since: None,
        last_message: None,
        dirty: true,
    };
    let hard_end = opts.duration.map(|d| Instant::now() + d);
    let mut tick = tokio::time::interval(STATS_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    info!(broker = %rx.broker, topic = %rx.topic, out = %rx.out_name, mqtt = ?opts.mqtt_version, "receiving");

    let reason = loop {
        rx.push_requests();
        let idle_end = opts.idle_exit.zip(rx.last_message).map(|(d, t)| t + d);
        let end = match (hard_end, idle_end) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        tokio::select! {
            biased;
            () = shutdown.cancelled() => break "shutdown requested",
            () = sleep_until(end) => {
                break if hard_end.is_some_and(|h| Instant::now() >= h) {
                    "duration elapsed"
                } else {
                    "idle"
                };
            }
            _ = tick.tick() => rx.publish_stats(&stats),
            () = sleep_until(rx.save_at) => rx.save()?,
            ev = events.recv() => match ev {
                Some(Ok(ev)) => rx.on_event(ev)?,
                Some(Err(e)) => rx.on_error(e)?,
                // The pump only stops when `events` is dropped.
                None => anyhow::bail!("the MQTT event loop stopped unexpectedly"),
            },
        }
    };
    info!(reason, "receiver stopping");
    rx.save()?;
    rx.finish(&mut events).await;
    let summary = rx.summary();
    stats.send_replace(summary.clone());
    Ok(summary)
}

#[derive(Debug)]
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn sleep_until(t: Option<Instant>) {
    match t {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

/// Opens the output; `lengths` are the output lengths of the saved state, if any.
fn open_output(
    path: Option<&Path>,
    lengths: Option<&std::collections::BTreeMap<String, u64>>,
    dbcs: Dbcs,
) -> Result<(Box<dyn Output>, String)> {
    match path {
        Some(p) if p != Path::new("-") => {
            // Append: every line up to the recorded length belongs to an acknowledged batch.
            let keep = lengths.map(|l| l.get("").copied().unwrap_or(0));
            let f = SizedFile::open(p, keep, OUT_BUFFER)?;
            Ok((
                Box::new(JsonlWriter::new(JsonlSink::File(f)).with_dbcs(dbcs)),
                p.display().to_string(),
            ))
        }
        _ => Ok((
            Box::new(
                JsonlWriter::new(JsonlSink::Stdout(std::io::BufWriter::with_capacity(
                    OUT_BUFFER,
                    std::io::stdout(),
                )))
                .with_dbcs(dbcs),
            ),
            "stdout".to_string(),
        )),
    }
}

/// The writer side: everything `run` keeps between events.
struct Shell {
    ledger: Ledger,
    out: Box<dyn Output>,
    out_name: String,
    state_path: Option<PathBuf>,
    /// Messages handled since the last snapshot, whose acks wait for the next one.
    held: Vec<AckHandle>,
    /// When the next snapshot is due (set by the first message after a snapshot).
    save_at: Option<Instant>,
    client: Client,
    broker: String,
    topic: String,
    /// Acks the request channel had no room for yet, oldest first.
    acks: VecDeque<AckHandle>,
    subscribe_pending: bool,
    connected: bool,
    connects: u64,
    subscribes: u64,
    bad_logged: u64,
    /// Set while the broker is unreachable, so an outage is logged once, not once per retry.
    outage_since: Option<Instant>,
    last_message: Option<Instant>,
    /// The summary changed since `stats` was last updated.
    dirty: bool,
}

impl Shell {
    fn summary(&self) -> ReceiveSummary {
        let mut s = self.ledger.summary();
        s.connects = self.connects;
        s.subscribes = self.subscribes;
        s
    }

    fn publish_stats(&mut self, stats: &watch::Sender<ReceiveSummary>) {
        if self.dirty {
            stats.send_replace(self.summary());
            self.dirty = false;
        }
    }

    /// Hands queued acks and a pending subscription to the event loop, as far as there is room.
    fn push_requests(&mut self) {
        while let Some(p) = self.acks.front() {
            // Full: retry after the next event, by which time the event loop has made room.
            if !self.client.try_ack(p) {
                break;
            }
            self.acks.pop_front();
        }
        if self.subscribe_pending && self.client.try_subscribe(&self.topic) {
            self.subscribe_pending = false;
        }
    }

    fn on_event(&mut self, ev: Ev) -> Result<()> {
        match ev {
            Ev::ConnAck { session_present } => {
                self.connects += 1;
                self.connected = true;
                match self.outage_since.take() {
                    Some(t) if self.connects > 1 => info!(
                        broker = %self.broker,
                        session_present,
                        "reconnected after {:.1} s",
                        t.elapsed().as_secs_f64()
                    ),
                    _ => {
                        info!(broker = %self.broker, session_present, "connected")
                    }
                }
                // Subscribe on every connection: a restarted broker may have lost the session.
                self.subscribe_pending = true;
                self.dirty = true;
            }
            Ev::SubAck { refused } => {
                if let Some(why) = refused {
                    anyhow::bail!(
                        "broker {} refused the subscription to '{}': {why} (check its ACL for this user)",
                        self.broker,
                        self.topic
                    );
                }
                self.subscribes += 1;
                self.dirty = true;
                info!(topic = %self.topic, "subscribed");
            }
            Ev::Publish(m) => self.on_publish(*m)?,
            Ev::DisconnectSent | Ev::Other => {}
        }
        Ok(())
    }

    fn on_publish(&mut self, m: client::Msg) -> Result<()> {
        self.last_message = Some(Instant::now());
        self.dirty = true;
        let client::Msg {
            topic,
            at_most_once,
            handle: mut p,
        } = m;
        let payload_len = p.payload().len();
        let verdict = self.ledger.classify(p.payload());
        p.drop_payload();
        match verdict {
            Verdict::New(batch) => {
                self.out
                    .write_batch(&batch)
                    .with_context(|| format!("{}: cannot write the output", self.out_name))?;
                if self.state_path.is_none() {
                    self.out
                        .flush()
                        .with_context(|| format!("{}: cannot write the output", self.out_name))?;
                }
                self.ledger.commit(&batch, crate::now_us());
            }
            Verdict::Duplicate { vehicle, id } => {
                debug!(%vehicle, %id, "duplicate batch dropped");
            }
            Verdict::BelowLowWater { vehicle, id } => {
                debug!(%vehicle, %id, "batch below the low-water mark dropped");
            }
            Verdict::Heartbeat { vehicle, id } => {
                debug!(%vehicle, %id, "heartbeat");
            }
            Verdict::Bad(e) => {
                // Acknowledged below all the same: re-delivery cannot repair it.
                self.bad_logged += 1;
                if self.bad_logged <= LOGGED_BAD_PAYLOADS {
                    warn!(%topic, bytes = payload_len, "dropping a bad payload: {e}");
                    if self.bad_logged == LOGGED_BAD_PAYLOADS {
                        warn!("further bad payloads are counted, not logged");
                    }
                }
            }
        }
        if self.state_path.is_none() {
            // Only now that the lines are flushed.
            if !at_most_once {
                self.acks.push_back(p);
                self.push_requests();
            }
            return Ok(());
        }
        // Only once a snapshot that includes this message is durable.
        if !at_most_once {
            self.held.push(p);
        }
        if self.save_at.is_none() {
            self.save_at = Some(Instant::now() + GROUP_COMMIT);
        }
        if self.held.len() >= GROUP_MAX {
            self.save()?;
        }
        Ok(())
    }

    /// Makes the output and a snapshot of the ledger durable (output first: the snapshot must
    /// never record bytes that a crash could lose), then releases the held acks.
    fn save(&mut self) -> Result<()> {
        let Some(path) = &self.state_path else {
            self.out
                .flush()
                .with_context(|| format!("{}: cannot write the output", self.out_name))?;
            return Ok(());
        };
        self.save_at = None;
        let outputs = self
            .out
            .sync()
            .with_context(|| format!("{}: cannot write the output", self.out_name))?;
        state::save(path, &state::encode(&outputs, &self.ledger))
            .with_context(|| format!("{}: cannot save the receiver state", path.display()))?;
        self.acks.extend(self.held.drain(..));
        self.push_requests();
        Ok(())
    }

    fn on_error(&mut self, e: ConnErr) -> Result<()> {
        if let Some(code) = &e.refused
            && self.connects == 0
        {
            // Retrying cannot fix these; after a first success they may be a broker restarting.
            anyhow::bail!(
                "broker {} refused the connection: {code} (check the credentials, the client id and --mqtt-version)",
                self.broker
            );
        }
        self.connected = false;
        // rumqttc discards acks meant for the lost connection too; the broker re-delivers
        // those batches and the dedup drops them.
        self.acks.clear();
        self.held.clear();
        if self.outage_since.is_none() {
            self.outage_since = Some(Instant::now());
            if self.connects == 0 {
                warn!(broker = %self.broker, "cannot reach the broker: {}; retrying", e.text);
            } else {
                warn!(broker = %self.broker, "lost the broker: {}; reconnecting", e.text);
            }
        } else {
            debug!(broker = %self.broker, "still unreachable: {}", e.text);
        }
        self.dirty = true;
        Ok(())
    }

    /// Gets the queued acks to the broker, then disconnects cleanly. The request channel is
    /// FIFO, so once the event loop has sent the DISCONNECT every ack before it was written.
    /// Messages arriving meanwhile are left unacknowledged: the broker keeps them for the next
    /// session.
    async fn finish(&mut self, events: &mut mpsc::Receiver<Result<Ev, ConnErr>>) {
        if !self.connected {
            return;
        }
        let deadline = Instant::now() + EXIT_GRACE;
        let mut disconnect_queued = false;
        loop {
            self.push_requests();
            if self.acks.is_empty() && !disconnect_queued {
                disconnect_queued = self.client.try_disconnect();
            }
            match tokio::time::timeout_at(deadline, events.recv()).await {
                Ok(Some(Ok(Ev::DisconnectSent))) => return,
                Ok(Some(Ok(_))) => {}
                Ok(Some(Err(e))) => {
                    warn!(broker = %self.broker, "connection lost while exiting: {}; unacknowledged batches will be re-delivered", e.text);
                    return;
                }
                Ok(None) | Err(_) => {
                    warn!(broker = %self.broker, "could not confirm the last acknowledgements before exiting; those batches will be re-delivered");
                    return;
                }
            }
        }
    }
}

/// A few human-readable lines.
pub fn render_summary(s: &ReceiveSummary) -> String {
    let mut o = String::new();
    let _ = write!(
        o,
        "{} messages, {} bad payloads",
        s.messages, s.bad_payloads
    );
    if !s.bad_by_reason.is_empty() {
        let reasons: Vec<String> = s
            .bad_by_reason
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect();
        let _ = write!(o, " ({})", reasons.join(", "));
    }
    let _ = writeln!(o, ", {} connections", s.connects);
    if s.vehicles.is_empty() {
        o.push_str("no batches received\n");
    }
    for (name, v) in &s.vehicles {
        let _ = writeln!(
            o,
            "{name}: {} samples in {} batches written; {} duplicate batches ({} samples) dropped",
            v.samples, v.batches, v.duplicate_batches, v.duplicate_samples
        );
        let _ = writeln!(
            o,
            "  evicted {} batches ({} samples, {} gap notices); damaged {}; dropped unwritten {} ({} samples); lost in crash {}; still missing {}",
            v.evicted_batches,
            v.evicted_samples,
            v.gap_notices,
            v.damaged_batches,
            v.dropped_batches,
            v.dropped_samples,
            v.lost_in_crash_batches,
            v.missing_batches
        );
        if v.low_water_batches + v.untracked_batches + v.forgotten_runs + v.late_notice_batches > 0
        {
            let _ = writeln!(
                o,
                "  memory bound: {} batches ({} samples) below a low-water mark dropped as seen; {} missing batches untracked; {} runs folded; {} batches of late gap notices",
                v.low_water_batches,
                v.low_water_samples,
                v.untracked_batches,
                v.forgotten_runs,
                v.late_notice_batches
            );
        }
        if v.heartbeats > 0 {
            let _ = write!(o, "  heartbeats {}", v.heartbeats);
            if let Some(b) = v.backlog_batches {
                let _ = write!(o, ", car backlog {b} batches");
            }
            o.push('\n');
        }
        if let (Some(p50), Some(p99)) = (v.latency_ms_p50, v.latency_ms_p99) {
            let _ = write!(o, "  latency p50 {p50:.1} ms, p99 {p99:.1} ms");
            if let Some(max) = v.latency_ms_max {
                let _ = write!(o, ", max {max:.1} ms");
            }
            o.push('\n');
        }
        for r in &v.runs {
            let _ = write!(o, "  run {}: ", r.run);
            match r.max_seq {
                Some(m) => {
                    let _ = write!(o, "seq 0..={m}, {} arrived", r.batches);
                }
                None => o.push_str("nothing arrived"),
            }
            if r.evicted_batches > 0 {
                let _ = write!(o, ", {} evicted", r.evicted_batches);
            }
            if r.damaged_batches > 0 {
                let _ = write!(o, ", {} damaged", r.damaged_batches);
            }
            if let Some(next) = r.ended_by_run {
                match r.lost_in_crash_after_seq {
                    Some(d) => {
                        let _ = write!(o, "; ended (run {next}: durable up to seq {d})");
                    }
                    None => {
                        let _ = write!(o, "; ended (run {next}: nothing durable)");
                    }
                }
            }
            if r.lost_in_crash_batches > 0 {
                let _ = write!(o, ", {} lost in crash", r.lost_in_crash_batches);
            }
            if r.missing_batches > 0 {
                let _ = write!(o, "; missing {}:", r.missing_batches);
                for &(a, b) in &r.missing {
                    if b == a + 1 {
                        let _ = write!(o, " {a}");
                    } else {
                        let _ = write!(o, " {a}-{}", b - 1);
                    }
                }
                if r.missing.iter().map(|(a, b)| b - a).sum::<u64>() < r.missing_batches {
                    o.push_str(" …");
                }
            }
            o.push('\n');
        }
    }
    o
}
