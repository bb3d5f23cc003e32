//! The receiver's MQTT client, 3.1.1 or 5: the few events and requests the shell needs, the same
//! for both versions, so the shell's logic exists once.
//!
//! MQTT 5 sessions are opened with clean start off and a session expiry of "never" (0xFFFFFFFF):
//! without an expiry a v5 broker drops the session, and with it the unacknowledged batches, as
//! soon as the connection closes, whatever clean start says.

use crate::mqtt::{BrokerAddr, Session};
use rumqttc::v5;
use rumqttc::{QoS, Transport};
use tokio::sync::mpsc;

/// Which MQTT protocol version to speak.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MqttVersion {
    /// MQTT 3.1.1.
    #[default]
    V3,
    V5,
}

impl std::str::FromStr for MqttVersion {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "3" | "3.1.1" | "4" => Ok(MqttVersion::V3),
            "5" => Ok(MqttVersion::V5),
            _ => Err(format!("MQTT version '{s}': expected 3 (3.1.1) or 5")),
        }
    }
}

/// A received message; its handle acknowledges it.
#[derive(Debug)]
pub struct Msg {
    pub topic: String,
    /// QoS 0: nothing to acknowledge.
    pub at_most_once: bool,
    pub handle: AckHandle,
}

/// The publish: its payload, and what acknowledging it needs.
#[derive(Debug)]
pub enum AckHandle {
    V3(rumqttc::Publish),
    V5(v5::mqttbytes::v5::Publish),
}

impl AckHandle {
    pub fn payload(&self) -> &[u8] {
        match self {
            AckHandle::V3(p) => &p.payload,
            AckHandle::V5(p) => &p.payload,
        }
    }

    /// Frees the payload (only the packet id is needed for the ack).
    pub fn drop_payload(&mut self) {
        match self {
            AckHandle::V3(p) => p.payload = Default::default(),
            AckHandle::V5(p) => p.payload = Default::default(),
        }
    }
}

/// The events the shell acts on.
#[derive(Debug)]
pub enum Ev {
    ConnAck {
        session_present: bool,
    },
    /// `refused`: the broker's reason when it refused the subscription.
    SubAck {
        refused: Option<String>,
    },
    Publish(Box<Msg>),
    /// The DISCONNECT went out: every request before it was written.
    DisconnectSent,
    Other,
}

/// A connection error; `fatal` when retrying cannot fix it (credentials, client id, protocol
/// version refused on the first connection).
#[derive(Debug)]
pub struct ConnErr {
    pub text: String,
    pub refused: Option<String>,
}

/// The request side of either client.
#[derive(Debug, Clone)]
pub enum Client {
    V3(rumqttc::AsyncClient),
    V5(v5::AsyncClient),
}

impl Client {
    /// False when the request channel is full (try again later).
    pub fn try_ack(&self, h: &AckHandle) -> bool {
        match (self, h) {
            (Client::V3(c), AckHandle::V3(p)) => c.try_ack(p).is_ok(),
            (Client::V5(c), AckHandle::V5(p)) => c.try_ack(p).is_ok(),
            // Cannot happen: handles come from this client. Dropped; the broker re-delivers.
            _ => true,
        }
    }

    pub fn try_subscribe(&self, topic: &str) -> bool {
        match self {
            Client::V3(c) => c.try_subscribe(topic, QoS::AtLeastOnce).is_ok(),
            Client::V5(c) => c
                .try_subscribe(topic, v5::mqttbytes::QoS::AtLeastOnce)
                .is_ok(),
        }
    }

    pub fn try_disconnect(&self) -> bool {
        match self {
            Client::V3(c) => c.try_disconnect().is_ok(),
            Client::V5(c) => c.try_disconnect().is_ok(),
        }
    }
}

/// Starts a client of `version` for `session`; the returned task drives its event loop, sends
/// every event to `tx`, and backs off after errors (rumqttc retries at once on the next poll).
pub fn start(
    session: &Session,
    version: MqttVersion,
    request_capacity: usize,
    tx: mpsc::Sender<Result<Ev, ConnErr>>,
) -> (Client, tokio::task::JoinHandle<()>) {
    match version {
        MqttVersion::V3 => {
            let (o, n) = session.options();
            let (client, mut el) = rumqttc::AsyncClient::new(o, request_capacity);
            el.set_network_options(n);
            let task = tokio::spawn(pump(tx, Loop::V3(Box::new(el))));
            (Client::V3(client), task)
        }
        MqttVersion::V5 => {
            let (client, el) = v5::AsyncClient::new(options_v5(session), request_capacity);
            let task = tokio::spawn(pump(tx, Loop::V5(Box::new(el))));
            (Client::V5(client), task)
        }
    }
}

const BACKOFF_MIN: std::time::Duration = std::time::Duration::from_millis(100);
const BACKOFF_MAX: std::time::Duration = std::time::Duration::from_secs(2);

/// Either event loop.
enum Loop {
    V3(Box<rumqttc::EventLoop>),
    V5(Box<v5::EventLoop>),
}

impl Loop {
    async fn poll(&mut self) -> Result<Ev, ConnErr> {
        match self {
            Loop::V3(el) => el.poll().await.map(ev_v3).map_err(err_v3),
            Loop::V5(el) => el.poll().await.map(ev_v5).map_err(err_v5),
        }
    }
}

async fn pump(tx: mpsc::Sender<Result<Ev, ConnErr>>, mut el: Loop) {
    let mut backoff = BACKOFF_MIN;
    loop {
        let ev = el.poll().await;
        let delay = match &ev {
            Err(_) => {
                let d = backoff;
                backoff = (backoff * 2).min(BACKOFF_MAX);
                Some(d)
            }
            Ok(Ev::ConnAck { .. }) => {
                backoff = BACKOFF_MIN;
                None
            }
            Ok(_) => None,
        };
        if tx.send(ev).await.is_err() {
            return;
        }
        if let Some(d) = delay {
            tokio::time::sleep(d).await;
        }
    }
}

fn ev_v3(ev: rumqttc::Event) -> Ev {
    use rumqttc::{Event, Outgoing, Packet, SubscribeReasonCode};
    match ev {
        Event::Incoming(Packet::ConnAck(a)) => Ev::ConnAck {
            session_present: a.session_present,
        },
        Event::Incoming(Packet::SubAck(s)) => Ev::SubAck {
            refused: s
                .return_codes
                .contains(&SubscribeReasonCode::Failure)
                .then(|| "failure".to_string()),
        },
        Event::Incoming(Packet::Publish(p)) => Ev::Publish(Box::new(Msg {
            topic: p.topic.clone(),
            at_most_once: p.qos == QoS::AtMostOnce,
            handle: AckHandle::V3(p),
        })),
        Event::Outgoing(Outgoing::Disconnect) => Ev::DisconnectSent,
        _ => Ev::Other,
    }
}

fn err_v3(e: rumqttc::ConnectionError) -> ConnErr {
    use rumqttc::{ConnectReturnCode as C, ConnectionError};
    let refused = match &e {
        ConnectionError::ConnectionRefused(
            code @ (C::BadUserNamePassword
            | C::NotAuthorized
            | C::BadClientId
            | C::RefusedProtocolVersion),
        ) => Some(format!("{code:?}")),
        _ => None,
    };
    ConnErr {
        text: e.to_string(),
        refused,
    }
}

fn ev_v5(ev: v5::Event) -> Ev {
    use rumqttc::Outgoing;
    use v5::mqttbytes::v5::{Packet, SubscribeReasonCode};
    match ev {
        v5::Event::Incoming(Packet::ConnAck(a)) => Ev::ConnAck {
            session_present: a.session_present,
        },
        v5::Event::Incoming(Packet::SubAck(s)) => Ev::SubAck {
            refused: s
                .return_codes
                .iter()
                .find(|c| !matches!(c, SubscribeReasonCode::Success(_)))
                .map(|c| format!("{c:?}")),
        },
        v5::Event::Incoming(Packet::Publish(p)) => Ev::Publish(Box::new(Msg {
            topic: String::from_utf8_lossy(&p.topic).into_owned(),
            at_most_once: p.qos == v5::mqttbytes::QoS::AtMostOnce,
            handle: AckHandle::V5(p),
        })),
        v5::Event::Outgoing(Outgoing::Disconnect) => Ev::DisconnectSent,
        _ => Ev::Other,
    }
}

fn err_v5(e: v5::ConnectionError) -> ConnErr {
    use v5::mqttbytes::v5::ConnectReturnCode as C;
    let refused = match &e {
        v5::ConnectionError::ConnectionRefused(
            code @ (C::BadUserNamePassword
            | C::NotAuthorized
            | C::BadClientId
            | C::ClientIdentifierNotValid
            | C::RefusedProtocolVersion
            | C::UnsupportedProtocolVersion
            | C::Banned
            | C::BadAuthenticationMethod),
        ) => Some(format!("{code:?}")),
        _ => None,
    };
    ConnErr {
        text: e.to_string(),
        refused,
    }
}

/// MQTT 5 options for `s`: the same transport, TLS, credentials and limits as 3.1.1.
fn options_v5(s: &Session) -> v5::MqttOptions {
    let mut o = match &s.addr {
        BrokerAddr::Tcp { host, port } => v5::MqttOptions::new(&s.client_id, host, *port),
        BrokerAddr::Unix(p) => {
            let mut o = v5::MqttOptions::new(&s.client_id, p.to_string_lossy(), 0);
            o.set_transport(Transport::unix());
            o
        }
    };
    let max = u32::try_from(s.max_packet).unwrap_or(u32::MAX);
    o.set_keep_alive(s.keep_alive)
        .set_clean_start(s.clean_session)
        .set_max_packet_size(Some(max))
        .set_receive_maximum(Some(s.inflight.max(1)))
        .set_manual_acks(s.manual_acks);
    if !s.clean_session {
        // Never expire: the broker keeps the session while the receiver is away.
        o.set_session_expiry_interval(Some(u32::MAX));
    }
    if let Some((u, p)) = &s.credentials {
        o.set_credentials(u, p);
    }
    if let Some(cfg) = &s.tls {
        o.set_transport(Transport::tls_with_config(
            rumqttc::TlsConfiguration::Rustls(cfg.clone()),
        ));
    }
    let mut n = rumqttc::NetworkOptions::new();
    n.set_connection_timeout(5);
    if let Some(dev) = &s.bind_device {
        n.set_bind_device(dev);
    }
    o.set_network_options(n);
    o
}
