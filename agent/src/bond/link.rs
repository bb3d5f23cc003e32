//! One uplink: a rumqttc session (QoS 1) that publishes batches and reports their PUBACKs.
//!
//! rumqttc keeps unacknowledged publishes only in memory and drops them when the broker has no
//! session, so the disk queue stays the truth: on any error the session is thrown away, the
//! link reports "down" (the scheduler re-sends its batches, from the queue, on any link) and a
//! fresh session is built after a backoff. `publish()` returns no packet id, so batch ids are
//! matched to packet ids in the order rumqttc reports `Outgoing::Publish(pkid)`. Heartbeats
//! (tiny QoS 1 publishes the scheduler asks for on idle links) are matched the same way.
//!
//! `EventLoop::poll` is not cancel-safe: dropping it while it writes a publish loses the packet
//! after rumqttc counted it as sent (its packet id then collides later). So the event loop runs
//! in a task of its own that is never cancelled mid-poll, and hands its events over a channel.

use crate::codec::BatchId;
use crate::mqtt::Session;
use rumqttc::{AsyncClient, ConnectReturnCode, Event, Outgoing, Packet, QoS};
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// From the core to a link.
#[derive(Debug)]
pub enum LinkCmd {
    Publish {
        id: BatchId,
        payload: Arc<Vec<u8>>,
    },
    /// A heartbeat; its PUBACK is reported as [`LinkEvent::HeartbeatAcked`] with `seq`.
    Heartbeat {
        seq: u64,
        payload: Arc<Vec<u8>>,
    },
}

/// From a link to the core.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkEvent {
    Up { link: usize },
    Down { link: usize, reason: String },
    Acked { link: usize, id: BatchId },
    HeartbeatAcked { link: usize, seq: u64 },
}

/// What a publish carried, to report its ack.
#[derive(Debug, Clone, Copy)]
enum Sent {
    Batch(BatchId),
    Heartbeat(u64),
}

impl Sent {
    fn acked(self, link: usize) -> LinkEvent {
        match self {
            Sent::Batch(id) => LinkEvent::Acked { link, id },
            Sent::Heartbeat(seq) => LinkEvent::HeartbeatAcked { link, seq },
        }
    }
}

#[derive(Debug)]
pub struct LinkTask {
    pub index: usize,
    pub name: String,
    pub session: Session,
    pub topic: String,
}

const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

impl LinkTask {
    /// Runs until `stop` is cancelled; then disconnects cleanly (bounded to one second).
    /// The caller instruments it with the link's span.
    pub async fn run(
        self,
        mut cmds: mpsc::Receiver<LinkCmd>,
        events: mpsc::Sender<LinkEvent>,
        stop: CancellationToken,
    ) {
        let link = self.index;
        let mut backoff = BACKOFF_MIN;
        let mut last_reason = String::new();
        loop {
            let (opts, net) = self.session.options();
            let (client, mut el) = AsyncClient::new(opts, usize::from(self.session.inflight) + 64);
            el.set_network_options(net);
            let (ev_tx, mut ev_rx) = mpsc::channel::<Result<Event, String>>(256);
            let poller = tokio::spawn(
                async move {
                    loop {
                        let r = el.poll().await.map_err(|e| e.to_string());
                        let end = r.is_err();
                        if ev_tx.send(r).await.is_err() || end {
                            break;
                        }
                    }
                }
                .in_current_span(),
            );
            let mut fifo: VecDeque<Sent> = VecDeque::new();
            let mut pkids: HashMap<u16, Sent> = HashMap::new();
            let mut connected = false;
            let reason = loop {
                tokio::select! {
                    _ = stop.cancelled() => {
                        if connected {
                            let _ = client.try_disconnect();
                            let _ = tokio::time::timeout(Duration::from_secs(1), async {
                                while let Some(Ok(ev)) = ev_rx.recv().await {
                                    if let Event::Incoming(Packet::PubAck(a)) = &ev
                                        && let Some(sent) = pkids.remove(&a.pkid)
                                    {
                                        let _ = events.try_send(sent.acked(link));
                                    }
                                    if matches!(ev, Event::Outgoing(Outgoing::Disconnect)) {
                                        break;
                                    }
                                }
                            })
                            .await;
                        }
                        poller.abort();
                        return;
                    }
                    ev = ev_rx.recv() => match ev.unwrap_or_else(|| Err("event loop ended".into())) {
                        Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                            if ack.code != ConnectReturnCode::Success {
                                break format!("broker refused the connection: {:?}", ack.code);
                            }
                            connected = true;
                            backoff = BACKOFF_MIN;
                            tracing::info!("link up ({})", self.session.addr);
                            last_reason.clear();
                            if events.send(LinkEvent::Up { link }).await.is_err() {
                                return;
                            }
                        }
                        Ok(Event::Outgoing(Outgoing::Publish(pkid))) => {
                            if let Some(id) = fifo.pop_front() {
                                pkids.insert(pkid, id);
                            }
                        }
                        Ok(Event::Incoming(Packet::PubAck(a))) => {
                            if let Some(sent) = pkids.remove(&a.pkid)
                                && events.send(sent.acked(link)).await.is_err()
                            {
                                return;
                            }
                        }
                        Ok(_) => {}
                        Err(e) => break e,
                    },
                    cmd = cmds.recv(), if connected => match cmd {
                        Some(cmd) => {
                            let (sent, payload) = match cmd {
                                LinkCmd::Publish { id, payload } => (Sent::Batch(id), payload),
                                LinkCmd::Heartbeat { seq, payload } => (Sent::Heartbeat(seq), payload),
                            };
                            fifo.push_back(sent);
                            if let Err(e) = client.try_publish(
                                self.topic.as_str(),
                                QoS::AtLeastOnce,
                                false,
                                payload.as_slice(),
                            ) {
                                fifo.pop_back();
                                break format!("cannot queue publish: {e}");
                            }
                        }
                        None => return,
                    },
                }
            };
            // This session is over: its event loop goes with it.
            poller.abort();
            // Commands still queued were never published; the scheduler takes them all back.
            while cmds.try_recv().is_ok() {}
            if connected || reason != last_reason {
                tracing::warn!("link down: {reason}");
            }
            last_reason.clone_from(&reason);
            if events.send(LinkEvent::Down { link, reason }).await.is_err() {
                return;
            }
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(BACKOFF_MAX);
        }
    }
}
