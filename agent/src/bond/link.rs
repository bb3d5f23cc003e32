//! One uplink: a rumqttc session (QoS 1) that publishes batches and reports their PUBACKs.
//!
//! rumqttc keeps unacknowledged publishes only in memory and drops them when the broker has no
//! session, so the disk queue stays the truth: on any error the session is thrown away, the
//! link reports "down" (the scheduler re-sends its batches, from the queue, on any link) and a
//! fresh session is built after a backoff. `publish()` returns no packet id, so batch ids are
//! matched to packet ids in the order rumqttc reports `Outgoing::Publish(pkid)`. Heartbeats
//! (tiny QoS 1 publishes the scheduler asks for on idle links) are matched the same way.
//!
//! The MQTT library sits behind two small traits, [`Connect`] and [`MqttSession`]: the agent uses
//! rumqttc ([`RumqttcSession`]), the tests drive the link logic with scripted sessions.

use crate::codec::BatchId;
use crate::mqtt::Session;
use rumqttc::{AsyncClient, ConnectReturnCode, Event, Outgoing, Packet, QoS};
use std::collections::{HashMap, VecDeque};
use std::future::Future;
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

/// What a link sees of an MQTT session; the client library is behind [`Connect`] and
/// [`MqttSession`] (rumqttc in the agent, scripted sessions in tests).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionEvent {
    /// The broker answered the CONNECT: accepted, or refused with why.
    ConnAck(Result<(), String>),
    /// A publish went out with this packet id (in the order they were queued).
    PublishSent(u16),
    /// The broker acknowledged this packet id.
    PubAck(u16),
    /// The DISCONNECT went out (after [`MqttSession::disconnect`]).
    Disconnected,
    /// Anything else (pings, subscriptions...).
    Other,
}

/// One MQTT session (QoS 1 publishes).
pub trait MqttSession: Send {
    /// Queues a QoS 1 publish without waiting; an error ends the session.
    fn publish(&mut self, topic: &str, payload: &[u8]) -> Result<(), String>;
    /// Queues a clean DISCONNECT.
    fn disconnect(&mut self);
    /// The next event; an error ends the session.
    fn next_event(&mut self) -> impl Future<Output = Result<SessionEvent, String>> + Send;
}

/// Builds a fresh session for every (re)connection.
pub trait Connect: Send + Sync {
    /// The session type.
    type Session: MqttSession;
    /// Starts connecting.
    fn open(&self) -> Self::Session;
    /// Where it connects, for logs.
    fn peer(&self) -> String;
}

/// A rumqttc session. `EventLoop::poll` is not cancel-safe (dropping it while it writes a
/// publish loses the packet after rumqttc counted it as sent), so the event loop runs in a task
/// of its own that is never cancelled mid-poll and hands its events over a channel; dropping
/// the session ends that task.
#[derive(Debug)]
pub struct RumqttcSession {
    client: AsyncClient,
    events: mpsc::Receiver<Result<Event, String>>,
    poller: tokio::task::JoinHandle<()>,
}

impl Drop for RumqttcSession {
    fn drop(&mut self) {
        self.poller.abort();
    }
}

impl Connect for Session {
    type Session = RumqttcSession;

    fn open(&self) -> RumqttcSession {
        let (opts, net) = self.options();
        let (client, mut el) = AsyncClient::new(opts, usize::from(self.inflight) + 64);
        el.set_network_options(net);
        let (ev_tx, events) = mpsc::channel::<Result<Event, String>>(256);
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
        RumqttcSession {
            client,
            events,
            poller,
        }
    }

    fn peer(&self) -> String {
        self.addr.to_string()
    }
}

impl MqttSession for RumqttcSession {
    fn publish(&mut self, topic: &str, payload: &[u8]) -> Result<(), String> {
        self.client
            .try_publish(topic, QoS::AtLeastOnce, false, payload)
            .map_err(|e| format!("cannot queue publish: {e}"))
    }

    fn disconnect(&mut self) {
        let _ = self.client.try_disconnect();
    }

    async fn next_event(&mut self) -> Result<SessionEvent, String> {
        match self.events.recv().await {
            None => Err("event loop ended".into()),
            Some(Err(e)) => Err(e),
            Some(Ok(Event::Incoming(Packet::ConnAck(ack)))) => Ok(SessionEvent::ConnAck(
                if ack.code == ConnectReturnCode::Success {
                    Ok(())
                } else {
                    Err(format!("broker refused the connection: {:?}", ack.code))
                },
            )),
            Some(Ok(Event::Outgoing(Outgoing::Publish(pkid)))) => {
                Ok(SessionEvent::PublishSent(pkid))
            }
            Some(Ok(Event::Incoming(Packet::PubAck(a)))) => Ok(SessionEvent::PubAck(a.pkid)),
            Some(Ok(Event::Outgoing(Outgoing::Disconnect))) => Ok(SessionEvent::Disconnected),
            Some(Ok(_)) => Ok(SessionEvent::Other),
        }
    }
}

#[derive(Debug)]
pub struct LinkTask<C = Session> {
    pub index: usize,
    pub name: String,
    pub session: C,
    pub topic: String,
}

const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

impl<C: Connect> LinkTask<C> {
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
            let mut session = self.session.open();
            let mut fifo: VecDeque<Sent> = VecDeque::new();
            let mut pkids: HashMap<u16, Sent> = HashMap::new();
            let mut connected = false;
            let reason = loop {
                tokio::select! {
                    _ = stop.cancelled() => {
                        if connected {
                            session.disconnect();
                            let _ = tokio::time::timeout(Duration::from_secs(1), async {
                                while let Ok(ev) = session.next_event().await {
                                    match ev {
                                        SessionEvent::PubAck(pkid) => {
                                            if let Some(sent) = pkids.remove(&pkid) {
                                                let _ = events.try_send(sent.acked(link));
                                            }
                                        }
                                        SessionEvent::Disconnected => break,
                                        _ => {}
                                    }
                                }
                            })
                            .await;
                        }
                        return;
                    }
                    ev = session.next_event() => match ev {
                        Ok(SessionEvent::ConnAck(Err(why))) => break why,
                        Ok(SessionEvent::ConnAck(Ok(()))) => {
                            // Commands that arrived while the link was down were sent before
                            // the core saw it go down; the scheduler has taken them back.
                            while cmds.try_recv().is_ok() {}
                            connected = true;
                            backoff = BACKOFF_MIN;
                            tracing::info!("link up ({})", self.session.peer());
                            last_reason.clear();
                            if events.send(LinkEvent::Up { link }).await.is_err() {
                                return;
                            }
                        }
                        Ok(SessionEvent::PublishSent(pkid)) => {
                            if let Some(id) = fifo.pop_front() {
                                pkids.insert(pkid, id);
                            }
                        }
                        Ok(SessionEvent::PubAck(pkid)) => {
                            if let Some(sent) = pkids.remove(&pkid)
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
                            if let Err(e) = session.publish(self.topic.as_str(), payload.as_slice()) {
                                fifo.pop_back();
                                break e;
                            }
                        }
                        None => return,
                    },
                }
            };
            // This session is over (dropping it ends its event loop).
            drop(session);
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};

    /// A session whose events the test writes and whose publishes the test reads.
    struct Scripted {
        events: UnboundedReceiver<Result<SessionEvent, String>>,
        published: UnboundedSender<Vec<u8>>,
        disconnected: std::sync::Arc<AtomicBool>,
    }

    impl MqttSession for Scripted {
        fn publish(&mut self, _topic: &str, payload: &[u8]) -> Result<(), String> {
            self.published
                .send(payload.to_vec())
                .map_err(|_| "gone".to_string())
        }
        fn disconnect(&mut self) {
            self.disconnected.store(true, Ordering::SeqCst);
        }
        async fn next_event(&mut self) -> Result<SessionEvent, String> {
            match self.events.recv().await {
                Some(e) => e,
                None => std::future::pending().await,
            }
        }
    }

    /// Hands out prepared sessions in order.
    #[derive(Default)]
    struct Sessions {
        ready: Mutex<VecDeque<Scripted>>,
        opened: AtomicUsize,
    }

    impl Connect for std::sync::Arc<Sessions> {
        type Session = Scripted;
        fn open(&self) -> Scripted {
            self.opened.fetch_add(1, Ordering::SeqCst);
            let next = self
                .ready
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .pop_front();
            next.unwrap_or_else(|| {
                // No more scripts: a session that never says anything.
                let (_tx, events) = unbounded_channel();
                let (published, _rx) = unbounded_channel();
                Scripted {
                    events,
                    published,
                    disconnected: Default::default(),
                }
            })
        }
        fn peer(&self) -> String {
            "scripted".into()
        }
    }

    struct Handle {
        events: UnboundedSender<Result<SessionEvent, String>>,
        published: UnboundedReceiver<Vec<u8>>,
        disconnected: std::sync::Arc<AtomicBool>,
    }

    fn script(sessions: &Sessions) -> Handle {
        let (etx, events) = unbounded_channel();
        let (published, prx) = unbounded_channel();
        let disconnected = std::sync::Arc::new(AtomicBool::new(false));
        sessions
            .ready
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push_back(Scripted {
                events,
                published,
                disconnected: disconnected.clone(),
            });
        Handle {
            events: etx,
            published: prx,
            disconnected,
        }
    }

    struct Rig {
        sessions: std::sync::Arc<Sessions>,
        cmds: mpsc::Sender<LinkCmd>,
        events: mpsc::Receiver<LinkEvent>,
        stop: CancellationToken,
        task: tokio::task::JoinHandle<()>,
    }

    fn rig(sessions: std::sync::Arc<Sessions>) -> Rig {
        let (cmds, crx) = mpsc::channel(16);
        let (etx, events) = mpsc::channel(16);
        let stop = CancellationToken::new();
        let task = LinkTask {
            index: 2,
            name: "c".into(),
            session: sessions.clone(),
            topic: "t".into(),
        };
        let task = tokio::spawn(task.run(crx, etx, stop.clone()));
        Rig {
            sessions,
            cmds,
            events,
            stop,
            task,
        }
    }

    fn batch(seq: u64) -> BatchId {
        BatchId { run: 1, seq }
    }

    async fn publish(r: &Rig, seq: u64) {
        r.cmds
            .send(LinkCmd::Publish {
                id: batch(seq),
                payload: Arc::new(vec![seq as u8]),
            })
            .await
            .expect("link alive");
    }

    #[tokio::test(start_paused = true)]
    async fn acks_follow_the_publish_order_whatever_the_packet_ids() {
        let sessions = std::sync::Arc::new(Sessions::default());
        let mut h = script(&sessions);
        let mut r = rig(sessions);
        h.events
            .send(Ok(SessionEvent::ConnAck(Ok(()))))
            .expect("send");
        assert_eq!(r.events.recv().await, Some(LinkEvent::Up { link: 2 }));
        for seq in 0..3 {
            publish(&r, seq).await;
        }
        r.cmds
            .send(LinkCmd::Heartbeat {
                seq: 77,
                payload: Arc::new(vec![9]),
            })
            .await
            .expect("send");
        for want in [0u8, 1, 2, 9] {
            assert_eq!(h.published.recv().await, Some(vec![want]));
        }
        for pkid in [7, 3, 9, 4] {
            h.events
                .send(Ok(SessionEvent::PublishSent(pkid)))
                .expect("send");
        }
        for pkid in [3, 4, 9, 7, 3] {
            h.events.send(Ok(SessionEvent::PubAck(pkid))).expect("send");
        }
        let mut got = Vec::new();
        for _ in 0..4 {
            got.push(r.events.recv().await.expect("event"));
        }
        assert_eq!(
            got,
            vec![
                LinkEvent::Acked {
                    link: 2,
                    id: batch(1)
                },
                LinkEvent::HeartbeatAcked { link: 2, seq: 77 },
                LinkEvent::Acked {
                    link: 2,
                    id: batch(2)
                },
                LinkEvent::Acked {
                    link: 2,
                    id: batch(0)
                },
            ],
            "the second PubAck of pkid 3 is ignored"
        );
        r.stop.cancel();
        h.events.send(Ok(SessionEvent::Disconnected)).expect("send");
        r.task.await.expect("task");
        assert!(
            h.disconnected.load(Ordering::SeqCst),
            "a clean DISCONNECT on stop"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_refused_or_broken_session_is_down_and_a_new_one_is_built_after_a_backoff() {
        let sessions = std::sync::Arc::new(Sessions::default());
        let h1 = script(&sessions);
        let h2 = script(&sessions);
        let mut h3 = script(&sessions);
        let mut r = rig(sessions);
        h1.events
            .send(Ok(SessionEvent::ConnAck(Err(
                "broker refused the connection: NotAuthorized".into(),
            ))))
            .expect("send");
        match r.events.recv().await {
            Some(LinkEvent::Down { link: 2, reason }) => {
                assert!(reason.contains("refused"), "{reason}")
            }
            other => panic!("{other:?}"),
        }
        h2.events
            .send(Ok(SessionEvent::ConnAck(Ok(()))))
            .expect("send");
        assert_eq!(r.events.recv().await, Some(LinkEvent::Up { link: 2 }));
        assert_eq!(r.sessions.opened.load(Ordering::SeqCst), 2);
        publish(&r, 5).await;
        h2.events
            .send(Err("connection reset by peer".into()))
            .expect("send");
        match r.events.recv().await {
            Some(LinkEvent::Down { reason, .. }) => assert!(reason.contains("reset"), "{reason}"),
            other => panic!("{other:?}"),
        }
        // Queued while down: never published on the next session (the scheduler re-sends).
        publish(&r, 6).await;
        h3.events
            .send(Ok(SessionEvent::ConnAck(Ok(()))))
            .expect("send");
        assert_eq!(r.events.recv().await, Some(LinkEvent::Up { link: 2 }));
        publish(&r, 7).await;
        assert_eq!(h3.published.recv().await, Some(vec![7]));
        assert_eq!(r.sessions.opened.load(Ordering::SeqCst), 3);
        r.stop.cancel();
        drop(h3);
        r.task.await.expect("task");
    }

    #[tokio::test(start_paused = true)]
    async fn acks_arriving_while_disconnecting_are_still_reported() {
        let sessions = std::sync::Arc::new(Sessions::default());
        let mut h = script(&sessions);
        let mut r = rig(sessions);
        h.events
            .send(Ok(SessionEvent::ConnAck(Ok(()))))
            .expect("send");
        assert_eq!(r.events.recv().await, Some(LinkEvent::Up { link: 2 }));
        publish(&r, 1).await;
        assert_eq!(h.published.recv().await, Some(vec![1]));
        h.events
            .send(Ok(SessionEvent::PublishSent(11)))
            .expect("send");
        // Let the task see the packet id before stopping.
        tokio::task::yield_now().await;
        tokio::time::sleep(Duration::from_millis(1)).await;
        r.stop.cancel();
        h.events.send(Ok(SessionEvent::PubAck(11))).expect("send");
        h.events.send(Ok(SessionEvent::Disconnected)).expect("send");
        r.task.await.expect("task");
        assert_eq!(
            r.events.recv().await,
            Some(LinkEvent::Acked {
                link: 2,
                id: batch(1)
            })
        );
    }
}
