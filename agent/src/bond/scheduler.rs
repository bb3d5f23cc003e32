//! Which batch goes on which link (sans-IO: inputs and `now_us` in, [`Action`]s out).
//!
//! - **Live first**: a batch taken back from a link goes first (it is already late), then the
//!   newest unsent batch while it is younger than `live_window_us`, then the oldest undelivered
//!   batch of the queue (backfill), so a backlog drains in order behind fresh data.
//! - **Bounded memory** whatever the backlog: the scheduler only holds live batches (for at most
//!   `live_window_us`), batches in flight and batches taken back from a link. Everything older
//!   is found through the `backlog` reader passed to [`Scheduler::poll`] (the queue's "oldest
//!   undelivered batch that is neither in flight nor waiting here").
//! - **Per link**: state ([`LinkState`]), smoothed RTT and variance from ack timing (RFC 6298,
//!   Karn's rule: no sample from an ack that may belong to either of two sends, nor from the
//!   late ack of a batch that was moved away), RTO =
//!   srtt + 4·rttvar clamped to `[min_rto_us, max_rto_us]` and doubled on every timeout until
//!   the next sample, goodput (EWMA of the delivery rate, bytes per second), a bytes-in-flight
//!   limit of `goodput × min RTT × bdp_factor` (at least `min_window_bytes` and
//!   `min_window_batches`, at most `max_in_flight` batches), and the radio band.
//! - **Earliest completion first**: a batch goes to the usable link whose estimated completion,
//!   `(bytes in flight + batch) / goodput + srtt / 2`, is smallest. When that link has no room the
//!   batch waits for it rather than going to a slower link (MPTCP ECF).
//! - **Failover**: an ack overdue, or an unacknowledged heartbeat past the link's RTO,
//!   makes the link `Suspect`: it takes no new batches and everything in flight on it moves to
//!   another link at once. A link that goes `Down` gives everything back too. The next ack (batch
//!   or heartbeat) brings a suspect link back `Up`. A late ack of a batch already delivered
//!   elsewhere counts as a duplicate ack (the receiver drops the duplicate). A batch's ack is
//!   overdue one RTO after the link could have carried it and what is still in flight before
//!   it (those bytes / goodput), counted from its send or the link's last ack, whichever is
//!   later: a queue of big batches on a slow link is not a stall.
//! - **Heartbeats**: a link that is up or suspect, has nothing in flight and has carried nothing
//!   for `heartbeat_idle_us` gets a [`Action::Heartbeat`] (an up link one at a time, a suspect
//!   link one every interval, so it is back within an interval of recovering); its ack
//!   ([`Scheduler::heartbeat_acked`]) feeds RTT and liveness. A fresh link answers its first
//!   heartbeat before it carries batches (unless no link has answered yet).
//! - **Drain before death**: a link in the [`RadioBand::Unusable`] band takes no new batches while
//!   another up link is in a better band; what it has in flight may complete.
//! - **Critical duplication**: a batch added with `critical` goes on the two best links while the
//!   best link (by radio band) is `Poor` or worse, or suspect. Every extra copy is counted.

use crate::codec::BatchId;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};

/// Scheduler settings; [`Default`] gives the researched defaults.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SchedulerConfig {
    /// Most batches in flight on one link (the MQTT session's inflight window).
    pub max_in_flight: usize,
    /// A new batch counts as live (sent newest first) for this long after its creation.
    pub live_window_us: u64,
    /// RTO before a link has any RTT sample.
    pub initial_rto_us: u64,
    /// Floor of the RTO.
    pub min_rto_us: u64,
    /// Cap of the RTO, backoff included.
    pub max_rto_us: u64,
    /// RTT assumed for completion estimates before the first sample.
    pub initial_rtt_us: u64,
    /// Goodput assumed (bytes per second) before the first delivery-rate sample.
    pub initial_goodput: f64,
    /// Bytes-in-flight limit = goodput × minimum RTT × `bdp_factor`.
    pub bdp_factor: f64,
    /// Floor of the bytes-in-flight limit, so a fresh link can start.
    pub min_window_bytes: u64,
    /// A link with fewer batches in flight than this always has room.
    pub min_window_batches: usize,
    /// An idle link gets a heartbeat after carrying nothing for this long (0: no heartbeats).
    pub heartbeat_idle_us: u64,
    /// Bytes assumed for a backlog batch until [`Scheduler::sized`] tells its real size.
    pub backlog_batch_bytes: u64,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        SchedulerConfig {
            max_in_flight: 32,
            live_window_us: 300_000,
            initial_rto_us: 1_000_000,
            min_rto_us: 150_000,
            max_rto_us: 3_000_000,
            initial_rtt_us: 100_000,
            initial_goodput: 250_000.0,
            bdp_factor: 2.0,
            min_window_bytes: 64 << 10,
            min_window_batches: 2,
            heartbeat_idle_us: 150_000,
            backlog_batch_bytes: 16 << 10,
        }
    }
}

/// A link's state as the scheduler sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LinkState {
    /// No session.
    Down,
    /// Carrying batches.
    Up,
    /// An ack or heartbeat is overdue: takes no new batches until the next ack.
    Suspect,
}

/// Radio quality band of a link's modem (RADIO.md §1.4), worst first; see
/// [`modem_hal::radio::Band::lte`].
pub use modem_hal::radio::Band as RadioBand;

/// Per-link counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct LinkCounters {
    /// Publishes of batches handed to the link (copies included).
    pub sent: u64,
    /// Batches acknowledged by the broker on this link.
    pub acked: u64,
    /// Batches taken back from this link (link down, suspect or ack overdue) to be sent again.
    pub moved: u64,
    /// Extra copies of critical batches sent on this link.
    pub duplicated: u64,
    /// Acks for batches already delivered through another send (a re-send or copy not needed).
    pub duplicate_acks: u64,
    pub heartbeats_sent: u64,
    pub heartbeats_acked: u64,
    /// Heartbeats unacknowledged past the RTO.
    pub heartbeats_lost: u64,
    pub ups: u64,
    pub downs: u64,
    /// Times the link turned suspect.
    pub suspects: u64,
}

/// What the caller must do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Publish batch `id` on `link`.
    Send { link: usize, id: BatchId },
    /// Publish a heartbeat on `link`; report its ack with [`Scheduler::heartbeat_acked`] and
    /// the same `seq`.
    Heartbeat { link: usize, seq: u64 },
}

#[derive(Debug, Clone, Copy)]
struct Flight {
    sent_us: u64,
    bytes: u64,
    critical: bool,
    /// This link carried the batch before: an ack may belong to either send (Karn).
    ambiguous: bool,
    /// The link's delivered bytes when this batch was sent (delivery-rate sample).
    delivered_at_send: u64,
    /// Sent while the link had far less in flight than its limit: the rate sample only says
    /// how much was offered, so it may raise the goodput estimate but not lower it.
    app_limited: bool,
}

#[derive(Debug)]
struct Link {
    state: LinkState,
    band: RadioBand,
    in_flight: HashMap<BatchId, Flight>,
    bytes_in_flight: u64,
    /// Batches moved away from this link whose ack may still come. Their late ack gives no
    /// RTT sample (Karn: it measures the stall, and with stalls in a row the RTO would feed on
    /// itself), and a re-send on this link is ambiguous.
    late: HashMap<BatchId, ()>,
    srtt_us: Option<u64>,
    rttvar_us: u64,
    /// Smallest RTT sample of the last [`MIN_RTT_WINDOW_US`] or so: (sample, when).
    min_rtt: Option<(u64, u64)>,
    /// RTO doublings since the last RTT sample.
    backoff: u32,
    goodput: Option<f64>,
    delivered: u64,
    last_send_us: Option<u64>,
    /// The last batch ack on this link.
    last_ack_us: Option<u64>,
    /// The heartbeat in flight: (seq, sent).
    heartbeat: Option<(u64, u64)>,
    counters: LinkCounters,
}

/// A batch waiting for a link.
#[derive(Debug, Clone, Copy)]
struct Waiting {
    /// When the batch was queued (0 for backlog and moved batches: they are not live).
    created_us: u64,
    bytes: u64,
    critical: bool,
    /// Taken back from a link: goes before live and backlog batches.
    moved: bool,
}

/// The bond scheduler. See the module documentation for the rules.
#[derive(Debug)]
pub struct Scheduler {
    cfg: SchedulerConfig,
    links: Vec<Link>,
    /// Batches waiting to be sent.
    unsent: BTreeMap<BatchId, Waiting>,
    next_heartbeat: u64,
}

impl Link {
    fn new() -> Link {
        Link {
            state: LinkState::Down,
            band: RadioBand::Good,
            in_flight: HashMap::new(),
            bytes_in_flight: 0,
            late: HashMap::new(),
            srtt_us: None,
            rttvar_us: 0,
            min_rtt: None,
            backoff: 0,
            goodput: None,
            delivered: 0,
            last_send_us: None,
            last_ack_us: None,
            heartbeat: None,
            counters: LinkCounters::default(),
        }
    }

    fn rto(&self, cfg: &SchedulerConfig) -> u64 {
        let base = match self.srtt_us {
            Some(s) => (s + 4 * self.rttvar_us).clamp(cfg.min_rto_us, cfg.max_rto_us),
            None => cfg.initial_rto_us,
        };
        base.saturating_mul(1 << self.backoff.min(16))
            .min(cfg.max_rto_us.max(base))
    }

    fn rtt_sample(&mut self, r: u64, now_us: u64) {
        if self
            .min_rtt
            .is_none_or(|(m, at)| r <= m || now_us.saturating_sub(at) > MIN_RTT_WINDOW_US)
        {
            self.min_rtt = Some((r, now_us));
        }
        match self.srtt_us {
            None => {
                self.srtt_us = Some(r);
                self.rttvar_us = r / 2;
            }
            Some(s) => {
                self.rttvar_us = (3 * self.rttvar_us + s.abs_diff(r)) / 4;
                self.srtt_us = Some((7 * s + r) / 8);
            }
        }
        self.backoff = 0;
    }

    fn srtt(&self, cfg: &SchedulerConfig) -> u64 {
        self.srtt_us.unwrap_or(cfg.initial_rtt_us)
    }

    fn goodput(&self, cfg: &SchedulerConfig) -> f64 {
        self.goodput.unwrap_or(cfg.initial_goodput).max(1.0)
    }

    /// goodput × RTT × k, with the path's minimum RTT: with srtt, which includes the queue the
    /// link's own batches build, the limit would chase its own queue and grow without bound.
    fn window(&self, cfg: &SchedulerConfig) -> u64 {
        let rtt = self.min_rtt.map_or_else(|| self.srtt(cfg), |(m, _)| m);
        let bdp = self.goodput(cfg) * rtt as f64 / 1e6 * cfg.bdp_factor;
        (bdp as u64).max(cfg.min_window_bytes)
    }

    fn has_room(&self, cfg: &SchedulerConfig) -> bool {
        self.state == LinkState::Up
            && self.in_flight.len() < cfg.max_in_flight
            && (self.in_flight.len() < cfg.min_window_batches
                || self.bytes_in_flight < self.window(cfg))
    }

    /// Estimated time (µs) until a batch of `bytes` sent now is acknowledged.
    fn completion(&self, cfg: &SchedulerConfig, bytes: u64) -> f64 {
        (self.bytes_in_flight + bytes) as f64 / self.goodput(cfg) * 1e6
            + self.srtt(cfg) as f64 / 2.0
    }

    fn take(&mut self, id: BatchId) -> Option<Flight> {
        let f = self.in_flight.remove(&id)?;
        self.bytes_in_flight = self.bytes_in_flight.saturating_sub(f.bytes);
        Some(f)
    }

    /// Whether a batch's ack is overdue: due one RTO after the link could have carried it and
    /// everything sent before it that is still in flight, counted from its send or the link's
    /// last ack, whichever is later (so a deep queue on a slow link is not taken for a stall).
    fn ack_overdue(&self, now_us: u64, rto: u64, cfg: &SchedulerConfig) -> bool {
        let goodput = self.goodput(cfg);
        let mut flights: Vec<(u64, u64)> = self
            .in_flight
            .values()
            .map(|f| (f.sent_us, f.bytes))
            .collect();
        flights.sort_unstable();
        let mut ahead = 0u64;
        flights.into_iter().any(|(sent, bytes)| {
            ahead += bytes;
            let from = self.last_ack_us.map_or(sent, |a| a.max(sent));
            let carry = (ahead as f64 / goodput * 1e6) as u64;
            now_us.saturating_sub(from) >= rto.saturating_add(carry)
        })
    }

    /// Any ack proves the link alive.
    fn heard(&mut self) {
        if self.state == LinkState::Suspect {
            tracing::debug!("suspect link answered: up again");
            self.state = LinkState::Up;
        }
    }
}

/// Bound on remembered moved sends per link (for late RTT samples), in units of `max_in_flight`.
const LATE_FACTOR: usize = 4;
/// A minimum RTT older than this is replaced by the next sample (the path may have changed).
const MIN_RTT_WINDOW_US: u64 = 10_000_000;
/// EWMA weight of a new goodput sample.
const GOODPUT_GAIN: f64 = 0.25;

impl Scheduler {
    /// A scheduler for `links` links, all down.
    pub fn new(cfg: SchedulerConfig, links: usize) -> Self {
        Scheduler {
            cfg,
            links: (0..links).map(|_| Link::new()).collect(),
            unsent: BTreeMap::new(),
            next_heartbeat: 0,
        }
    }

    /// A new batch of `bytes` to deliver, created at `created_us` (use 0 for backlog found at
    /// start-up). `critical` batches are duplicated while the best link is poor.
    pub fn add(&mut self, id: BatchId, created_us: u64, bytes: u64, critical: bool) {
        self.unsent.insert(
            id,
            Waiting {
                created_us,
                bytes,
                critical,
                moved: false,
            },
        );
    }

    /// The real size of a batch handed out from the backlog (its size was assumed until now).
    pub fn sized(&mut self, id: BatchId, bytes: u64) {
        for l in &mut self.links {
            if let Some(f) = l.in_flight.get_mut(&id) {
                l.bytes_in_flight = (l.bytes_in_flight - f.bytes) + bytes;
                f.bytes = bytes;
            }
        }
        if let Some(w) = self.unsent.get_mut(&id) {
            w.bytes = bytes;
        }
    }

    /// The batch no longer needs delivering (evicted, or gone from the queue).
    pub fn forget(&mut self, id: BatchId) {
        self.unsent.remove(&id);
        for l in &mut self.links {
            l.take(id);
            l.late.remove(&id);
        }
    }

    /// The link has a session.
    pub fn link_up(&mut self, link: usize) {
        if let Some(l) = self.links.get_mut(link)
            && l.state == LinkState::Down
        {
            l.state = LinkState::Up;
            l.counters.ups += 1;
            l.backoff = 0;
            l.last_send_us = None;
            l.heartbeat = None;
        }
    }

    /// The link lost its session: everything in flight on it is sent again elsewhere.
    pub fn link_down(&mut self, link: usize) {
        let Some(l) = self.links.get_mut(link) else {
            return;
        };
        if l.state != LinkState::Down {
            l.counters.downs += 1;
        }
        l.state = LinkState::Down;
        l.heartbeat = None;
        // A new session never acks the old one's publishes.
        l.late.clear();
        self.move_all(link, false);
    }

    /// The radio band of the link's modem (see [`RadioBand::lte`]).
    pub fn radio(&mut self, link: usize, band: RadioBand) {
        if let Some(l) = self.links.get_mut(link) {
            l.band = band;
        }
    }

    /// Takes back everything in flight on `link` (not what another link still carries).
    fn move_all(&mut self, link: usize, remember: bool) {
        let Some(l) = self.links.get_mut(link) else {
            return;
        };
        let flights: Vec<(BatchId, Flight)> = l.in_flight.drain().collect();
        l.bytes_in_flight = 0;
        if remember {
            if l.late.len() + flights.len() > LATE_FACTOR * self.cfg.max_in_flight.max(1) {
                l.late.clear();
            }
            for (id, f) in &flights {
                if !f.ambiguous {
                    l.late.insert(*id, ());
                }
            }
        }
        for (id, f) in flights {
            if self.links.iter().any(|o| o.in_flight.contains_key(&id)) {
                continue;
            }
            self.links[link].counters.moved += 1;
            self.unsent.insert(
                id,
                Waiting {
                    created_us: 0,
                    bytes: f.bytes,
                    critical: f.critical,
                    moved: true,
                },
            );
        }
    }

    fn suspect(&mut self, link: usize) {
        let l = &mut self.links[link];
        if l.state == LinkState::Up {
            l.state = LinkState::Suspect;
            l.counters.suspects += 1;
            tracing::debug!(link, "link suspect: ack overdue");
        }
        l.backoff = l.backoff.saturating_add(1);
        self.move_all(link, true);
    }

    /// The broker acknowledged `id` on `link` at `now_us`. Returns true if the batch was still
    /// outstanding (false: a duplicate ack).
    pub fn acked(&mut self, link: usize, id: BatchId, now_us: u64) -> bool {
        let cfg_initial = self.cfg.initial_goodput;
        let mut outstanding = self.unsent.remove(&id).is_some();
        let mut mine = None;
        for (i, l) in self.links.iter_mut().enumerate() {
            if let Some(f) = l.take(id) {
                outstanding = true;
                if i == link {
                    mine = Some(f);
                }
            }
        }
        let Some(l) = self.links.get_mut(link) else {
            return outstanding;
        };
        l.heard();
        l.counters.acked += 1;
        if !outstanding {
            l.counters.duplicate_acks += 1;
        }
        // A late ack of a moved batch (`late`) proves the link alive but gives no RTT sample.
        l.late.remove(&id);
        if let Some(f) = mine {
            l.last_ack_us = Some(now_us);
            l.delivered += f.bytes;
            if !f.ambiguous {
                let rtt = now_us.saturating_sub(f.sent_us);
                l.rtt_sample(rtt, now_us);
                let rate = (l.delivered - f.delivered_at_send) as f64 * 1e6 / rtt.max(1) as f64;
                // An app-limited sample (the link had spare room) measures what was
                // offered, not what the path carries: it may raise the estimate, never lower
                // it, not even the first one below the initial guess, or a link that carried
                // one small batch would look too slow to be chosen again.
                l.goodput = Some(match l.goodput {
                    None if f.app_limited => rate.max(cfg_initial),
                    None => rate,
                    Some(g) if f.app_limited && rate < g => g,
                    Some(g) => g + GOODPUT_GAIN * (rate - g),
                });
            }
        }
        outstanding
    }

    /// The heartbeat `seq` was acknowledged on `link` at `now_us`.
    pub fn heartbeat_acked(&mut self, link: usize, seq: u64, now_us: u64) {
        let Some(l) = self.links.get_mut(link) else {
            return;
        };
        l.heard();
        l.counters.heartbeats_acked += 1;
        if let Some((s, sent)) = l.heartbeat
            && s == seq
        {
            l.heartbeat = None;
            l.rtt_sample(now_us.saturating_sub(sent), now_us);
        }
    }

    /// Whether `id` is in flight on some link or waiting here: the backlog reader must skip it.
    pub fn holds(&self, id: BatchId) -> bool {
        self.unsent.contains_key(&id) || self.links.iter().any(|l| l.in_flight.contains_key(&id))
    }

    /// Moves overdue batches, lets live batches older than the live window fall back to the
    /// backlog, and decides what to send now. `backlog(skip)` returns the oldest undelivered
    /// batch for which `skip` is false.
    pub fn poll(
        &mut self,
        now_us: u64,
        mut backlog: impl FnMut(&dyn Fn(BatchId) -> bool) -> Option<BatchId>,
    ) -> Vec<Action> {
        let window = self.cfg.live_window_us;
        self.unsent.retain(|_, w| {
            w.moved || w.created_us == 0 || now_us.saturating_sub(w.created_us) <= window
        });
        let mut out = Vec::new();
        self.check_overdue(now_us);
        while let Some((id, w)) = self.next_batch(now_us, &mut backlog) {
            let Some(primary) = self.pick(w.bytes, None) else {
                break;
            };
            self.unsent.remove(&id);
            self.send(primary, id, w, now_us);
            out.push(Action::Send { link: primary, id });
            if w.critical
                && self.degraded()
                && let Some(second) = self.pick_with_room(w.bytes, Some(primary))
            {
                self.send(second, id, w, now_us);
                self.links[second].counters.duplicated += 1;
                out.push(Action::Send { link: second, id });
            }
        }
        self.heartbeats(now_us, &mut out);
        out
    }

    fn check_overdue(&mut self, now_us: u64) {
        for i in 0..self.links.len() {
            let l = &self.links[i];
            if l.state == LinkState::Down {
                continue;
            }
            let rto = l.rto(&self.cfg);
            let batch_overdue = l.ack_overdue(now_us, rto, &self.cfg);
            let hb_overdue = l
                .heartbeat
                .is_some_and(|(_, sent)| now_us.saturating_sub(sent) >= rto);
            if hb_overdue {
                let l = &mut self.links[i];
                l.heartbeat = None;
                l.counters.heartbeats_lost += 1;
            }
            if batch_overdue || hb_overdue {
                self.suspect(i);
            }
        }
    }

    /// The batch to place next: moved first, then live (newest first), then the oldest of the
    /// backlog and of what waits here.
    fn next_batch(
        &mut self,
        now_us: u64,
        backlog: &mut impl FnMut(&dyn Fn(BatchId) -> bool) -> Option<BatchId>,
    ) -> Option<(BatchId, Waiting)> {
        if let Some((id, w)) = self.unsent.iter().find(|(_, w)| w.moved) {
            return Some((*id, *w));
        }
        if let Some((id, w)) = self.unsent.last_key_value()
            && w.created_us > 0
            && now_us.saturating_sub(w.created_us) <= self.cfg.live_window_us
        {
            return Some((*id, *w));
        }
        let waiting = self.unsent.first_key_value().map(|(id, w)| (*id, *w));
        let older = backlog(&|id| self.holds(id)).filter(|b| waiting.is_none_or(|(w, _)| *b < w));
        match older {
            Some(b) => Some((
                b,
                Waiting {
                    created_us: 0,
                    bytes: self.cfg.backlog_batch_bytes,
                    critical: false,
                    moved: false,
                },
            )),
            None => waiting,
        }
    }

    /// Links that may take new batches: up, not draining (unusable band while another up link
    /// is in a better band), and, with heartbeats on, measured (a fresh link answers its first
    /// heartbeat before it carries batches, unless no up link has answered anything yet).
    fn usable(&self) -> impl Iterator<Item = (usize, &Link)> {
        let up = || self.links.iter().filter(|l| l.state == LinkState::Up);
        let best_up = up().map(|l| l.band).max();
        let probe_first = self.cfg.heartbeat_idle_us > 0 && up().any(|l| l.srtt_us.is_some());
        self.links.iter().enumerate().filter(move |(_, l)| {
            l.state == LinkState::Up
                && (l.band > RadioBand::Unusable || best_up == Some(RadioBand::Unusable))
                && (!probe_first || l.srtt_us.is_some())
        })
    }

    /// Earliest completion: the usable link that completes `bytes` first, if it has room;
    /// `None` (wait) when it has none.
    fn pick(&self, bytes: u64, except: Option<usize>) -> Option<usize> {
        let cfg = &self.cfg;
        let (i, l) =
            self.usable()
                .filter(|(i, _)| Some(*i) != except)
                .min_by(|(i, a), (j, b)| {
                    a.completion(cfg, bytes)
                        .total_cmp(&b.completion(cfg, bytes))
                        .then(i.cmp(j))
                })?;
        l.has_room(cfg).then_some(i)
    }

    /// The usable link with room that completes `bytes` first.
    fn pick_with_room(&self, bytes: u64, except: Option<usize>) -> Option<usize> {
        let cfg = &self.cfg;
        self.usable()
            .filter(|(i, l)| Some(*i) != except && l.has_room(cfg))
            .min_by(|(i, a), (j, b)| {
                a.completion(cfg, bytes)
                    .total_cmp(&b.completion(cfg, bytes))
                    .then(i.cmp(j))
            })
            .map(|(i, _)| i)
    }

    /// The best link (by radio band, up before suspect) is poor or worse, or suspect.
    fn degraded(&self) -> bool {
        self.links
            .iter()
            .filter(|l| l.state != LinkState::Down)
            .max_by_key(|l| (l.band, l.state == LinkState::Up))
            .is_some_and(|l| l.band <= RadioBand::Poor || l.state == LinkState::Suspect)
    }

    fn send(&mut self, link: usize, id: BatchId, w: Waiting, now_us: u64) {
        let cfg = self.cfg;
        let l = &mut self.links[link];
        let ambiguous = l.late.remove(&id).is_some();
        let app_limited = l.bytes_in_flight + w.bytes < l.window(&cfg) / 2;
        l.in_flight.insert(
            id,
            Flight {
                sent_us: now_us,
                bytes: w.bytes,
                critical: w.critical,
                ambiguous,
                delivered_at_send: l.delivered,
                app_limited,
            },
        );
        l.bytes_in_flight += w.bytes;
        l.last_send_us = Some(now_us);
        l.counters.sent += 1;
    }

    fn heartbeats(&mut self, now_us: u64, out: &mut Vec<Action>) {
        let idle = self.cfg.heartbeat_idle_us;
        if idle == 0 {
            return;
        }
        for (link, l) in self.links.iter_mut().enumerate() {
            // A suspect link is probed every interval (the newest probe is the one timed; any
            // answer brings the link back), an up link with one probe at a time.
            let due = l.state != LinkState::Down
                && (l.heartbeat.is_none() || l.state == LinkState::Suspect)
                && l.in_flight.is_empty()
                && l.last_send_us
                    .is_none_or(|t| now_us.saturating_sub(t) >= idle);
            if due {
                let seq = self.next_heartbeat;
                self.next_heartbeat += 1;
                l.heartbeat = Some((seq, now_us));
                l.last_send_us = Some(now_us);
                l.counters.heartbeats_sent += 1;
                out.push(Action::Heartbeat { link, seq });
            }
        }
    }

    /// Batches waiting here (live or moved; the backlog stays in the queue).
    pub fn unsent(&self) -> usize {
        self.unsent.len()
    }

    /// Batches in flight on `link`.
    pub fn in_flight(&self, link: usize) -> usize {
        self.links.get(link).map_or(0, |l| l.in_flight.len())
    }

    /// Bytes in flight on `link`.
    pub fn bytes_in_flight(&self, link: usize) -> u64 {
        self.links.get(link).map_or(0, |l| l.bytes_in_flight)
    }

    pub fn state(&self, link: usize) -> LinkState {
        self.links.get(link).map_or(LinkState::Down, |l| l.state)
    }

    /// The radio band last given with [`Scheduler::radio`] (`Good` until then).
    pub fn band(&self, link: usize) -> RadioBand {
        self.links.get(link).map_or(RadioBand::Unusable, |l| l.band)
    }

    /// Smoothed RTT (µs), once sampled.
    pub fn srtt_us(&self, link: usize) -> Option<u64> {
        self.links.get(link).and_then(|l| l.srtt_us)
    }

    /// RTT variance (µs), once sampled.
    pub fn rttvar_us(&self, link: usize) -> Option<u64> {
        self.links
            .get(link)
            .and_then(|l| l.srtt_us.map(|_| l.rttvar_us))
    }

    /// The current retransmission timeout of `link` (µs), backoff included.
    pub fn rto_us(&self, link: usize) -> u64 {
        self.links
            .get(link)
            .map_or(self.cfg.initial_rto_us, |l| l.rto(&self.cfg))
    }

    /// Goodput estimate (bytes per second), once sampled.
    pub fn goodput(&self, link: usize) -> Option<f64> {
        self.links.get(link).and_then(|l| l.goodput)
    }

    /// The bytes-in-flight limit of `link`.
    pub fn window_bytes(&self, link: usize) -> u64 {
        self.links.get(link).map_or(0, |l| l.window(&self.cfg))
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
mod tests;
