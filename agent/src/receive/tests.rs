//! The async shell against a real Mosquitto on a unix socket (skipped when it is not installed).

use super::*;
use crate::codec::{
    BatchId, GapBody, GapCause, Kind, RunBody, control_envelope, data_envelope, encode,
};
use rumqttc::{AsyncClient, Event, Packet, QoS};
use sensor_drivers::Sample;
use serde_json::{Value, json};
use std::path::Path;
use std::process::{Child, Command, Stdio};

const MOSQUITTO: &str = "/usr/sbin/mosquitto";

/// A mosquitto child on `<dir>/mqtt.sock`, killed on drop.
struct Broker {
    child: Option<Child>,
    conf: PathBuf,
    sock: PathBuf,
}

impl Broker {
    /// None when mosquitto is not installed.
    fn start(dir: &Path) -> Option<Broker> {
        if !Path::new(MOSQUITTO).exists() {
            eprintln!("{MOSQUITTO} not installed: skipping");
            return None;
        }
        let sock = dir.join("mqtt.sock");
        let conf = dir.join("mosquitto.conf");
        // `user root` keeps root from switching to the mosquitto user, which could not create
        // the socket in our private tempdir; as any other user it is ignored.
        let text = format!(
            "user root\nlistener 0 {}\nallow_anonymous true\npersistence false\n",
            sock.display()
        );
        std::fs::write(&conf, text).expect("write mosquitto.conf");
        let mut b = Broker {
            child: None,
            conf,
            sock,
        };
        b.spawn();
        Some(b)
    }

    fn spawn(&mut self) {
        let _ = std::fs::remove_file(&self.sock);
        let child = Command::new(MOSQUITTO)
            .arg("-c")
            .arg(&self.conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start mosquitto");
        self.child = Some(child);
        // Readiness, not a timing guess: wait until the socket accepts a connection.
        let until = std::time::Instant::now() + Duration::from_secs(5);
        while std::os::unix::net::UnixStream::connect(&self.sock).is_err() {
            assert!(std::time::Instant::now() < until, "mosquitto did not start");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn addr(&self) -> BrokerAddr {
        BrokerAddr::Unix(self.sock.clone())
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Publishes `msgs` (topic, payload) at QoS 1 in order and waits for every PUBACK.
async fn publish_all(addr: &BrokerAddr, client_id: &str, msgs: &[(String, Vec<u8>)]) {
    let session = Session {
        addr: addr.clone(),
        client_id: client_id.to_string(),
        keep_alive: Duration::from_secs(5),
        clean_session: true,
        credentials: None,
        tls: None,
        bind_device: None,
        max_packet: MAX_PACKET,
        inflight: 100,
        manual_acks: false,
    };
    let (o, n) = session.options();
    let (client, mut el) = AsyncClient::new(o, msgs.len() + 10);
    el.set_network_options(n);
    for (topic, payload) in msgs {
        client
            .try_publish(topic.as_str(), QoS::AtLeastOnce, false, payload.clone())
            .expect("queue publish");
    }
    let mut acked = 0;
    let done = async {
        while acked < msgs.len() {
            match el.poll().await {
                Ok(Event::Incoming(Packet::PubAck(_))) => acked += 1,
                Ok(_) => {}
                Err(e) => panic!("publisher: {e}"),
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(5), done)
        .await
        .expect("all publishes acknowledged");
    let _ = client.try_disconnect();
    let _ = tokio::time::timeout(Duration::from_millis(500), el.poll()).await;
}

fn samples(t0: u64, vals: &[(u16, f64)]) -> Vec<Sample> {
    vals.iter()
        .enumerate()
        .map(|(i, &(channel, value))| Sample {
            t_us: t0 + i as u64 * 1000,
            channel,
            value,
        })
        .collect()
}

fn id(run: u32, seq: u64) -> BatchId {
    BatchId { run, seq }
}

fn topic(vehicle: &str) -> String {
    format!("pitlink/{vehicle}/batch")
}

fn data(vehicle: &str, bid: BatchId, s: &[Sample]) -> (String, Vec<u8>) {
    (
        topic(vehicle),
        encode(&data_envelope(vehicle, bid, "synth", s)),
    )
}

fn sample_lines(vehicle: &str, bid: BatchId, s: &[Sample]) -> Vec<Value> {
    s.iter()
        .map(|x| {
            json!({"vehicle": vehicle, "run": bid.run, "seq": bid.seq, "source": "synth",
                   "ch": x.channel, "t_us": x.t_us, "v": x.value})
        })
        .collect()
}

fn read_lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .expect("output file")
        .lines()
        .map(|l| serde_json::from_str(l).expect("every line is JSON"))
        .collect()
}

async fn wait_stats(
    rx: &mut watch::Receiver<ReceiveSummary>,
    what: &str,
    f: impl FnMut(&ReceiveSummary) -> bool,
) {
    tokio::time::timeout(Duration::from_secs(5), rx.wait_for(f))
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
        .expect("stats sender alive");
}

#[tokio::test]
async fn writes_each_batch_once_and_accounts_for_the_rest() {
    let dir = tempfile::tempdir().expect("tempdir");
    let Some(broker) = Broker::start(dir.path()) else {
        return;
    };
    let out = dir.path().join("out.jsonl");
    let mut opts = ReceiveOptions::new(broker.addr());
    opts.out = Some(out.clone());
    opts.idle_exit = Some(Duration::from_millis(600));
    opts.duration = Some(Duration::from_secs(8));
    opts.client_id = "receive-test-1".into();
    let (stats_tx, mut stats_rx) = watch::channel(ReceiveSummary::default());
    let task = tokio::spawn(run(opts, CancellationToken::new(), stats_tx));
    wait_stats(&mut stats_rx, "the subscription", |s| s.subscribes >= 1).await;

    let t0 = crate::now_us();
    let s21 = samples(t0, &[(0, 1.5), (1, -2.25), (2, 0.1)]);
    let s22 = samples(t0 + 10_000, &[(0, 3.0), (1, 0.001)]);
    let s12 = samples(t0 - 5_000_000, &[(4, 42.0)]);
    let s15 = samples(t0 - 4_000_000, &[(4, 43.0)]);
    let s27 = samples(t0 + 20_000, &[(0, 7.0), (3, 123456.789)]);
    let s_car2 = samples(t0, &[(9, 0.5)]);
    let run_body = RunBody {
        previous_run: Some(1),
        previous_durable_last_seq: Some(3),
    };
    let gap_body = GapBody {
        cause: GapCause::Evicted,
        run: 2,
        seqs: vec![(3, 5)],
        batches: 2,
        samples: 7,
        t_first_us: t0 - 1000,
        t_last_us: t0 - 500,
    };
    let msgs = vec![
        (
            topic("car-1"),
            encode(&control_envelope(
                "car-1",
                id(2, 0),
                Kind::Run,
                t0,
                &run_body,
            )),
        ),
        data("car-1", id(2, 1), &s21),
        data("car-1", id(2, 2), &s22),
        data("car-1", id(2, 1), &s21), // re-sent on another link
        (topic("car-1"), b"not a batch".to_vec()),
        data("car-1", id(1, 2), &s12), // backlog of the previous run
        data("car-1", id(1, 5), &s15),
        (
            topic("car-1"),
            encode(&control_envelope(
                "car-1",
                id(2, 5),
                Kind::Gap,
                t0 + 1,
                &gap_body,
            )),
        ),
        data("car-1", id(2, 7), &s27),
        data("car-2", id(1, 0), &s_car2),
    ];
    publish_all(&broker.addr(), "publisher-1", &msgs).await;

    let summary = tokio::time::timeout(Duration::from_secs(8), task)
        .await
        .expect("receiver exits when idle")
        .expect("receiver task")
        .expect("receiver result");

    let mut expected = vec![
        json!({"event": "run", "vehicle": "car-1", "run": 2, "seq": 0, "t_us": t0,
                                   "previous_run": 1, "previous_durable_last_seq": 3}),
    ];
    expected.extend(sample_lines("car-1", id(2, 1), &s21));
    expected.extend(sample_lines("car-1", id(2, 2), &s22));
    expected.extend(sample_lines("car-1", id(1, 2), &s12));
    expected.extend(sample_lines("car-1", id(1, 5), &s15));
    expected.push(
        json!({"event": "gap", "vehicle": "car-1", "run": 2, "seq": 5, "t_us": t0 + 1,
                         "cause": "evicted", "gap_run": 2, "seqs": [[3, 5]], "batches": 2,
                         "samples": 7, "t_first_us": t0 - 1000, "t_last_us": t0 - 500}),
    );
    expected.extend(sample_lines("car-1", id(2, 7), &s27));
    expected.extend(sample_lines("car-2", id(1, 0), &s_car2));
    assert_eq!(read_lines(&out), expected);

    assert_eq!((summary.messages, summary.bad_payloads), (10, 1));
    assert_eq!((summary.connects, summary.subscribes), (1, 1));
    let c1 = &summary.vehicles["car-1"];
    assert_eq!((c1.batches, c1.samples), (7, 9));
    assert_eq!((c1.duplicate_batches, c1.duplicate_samples), (1, 3));
    assert_eq!(
        (c1.gap_notices, c1.evicted_batches, c1.evicted_samples),
        (1, 2, 7)
    );
    assert_eq!(c1.run_announcements, 1);
    // Run 1 (durable up to 3): 0, 1, 3 still to come, 4 lost in the crash. Run 2: 6 missing.
    assert_eq!((c1.missing_batches, c1.lost_in_crash_batches), (4, 1));
    let r1 = &c1.runs[0];
    assert_eq!(
        (r1.run, r1.max_seq, r1.missing.clone()),
        (1, Some(5), vec![(0, 2), (3, 4)])
    );
    assert_eq!(
        (r1.ended_by_run, r1.lost_in_crash_after_seq),
        (Some(2), Some(3))
    );
    let r2 = &c1.runs[1];
    assert_eq!(
        (r2.run, r2.max_seq, r2.missing.clone()),
        (2, Some(7), vec![(6, 7)])
    );
    assert!(r2.announced);
    let p50 = c1.latency_ms_p50.expect("latency measured");
    assert!(p50 < 10_000.0, "p50 {p50} ms");
    let c2 = &summary.vehicles["car-2"];
    assert_eq!((c2.batches, c2.samples, c2.missing_batches), (1, 1, 0));
    // The watch saw the final summary too.
    assert_eq!(*stats_rx.borrow(), summary);

    let text = render_summary(&summary);
    assert!(
        text.contains("car-1: 9 samples in 7 batches written"),
        "{text}"
    );
    assert!(text.contains("missing 3: 0-1 3"), "{text}");
}

#[tokio::test]
async fn survives_a_broker_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let Some(mut broker) = Broker::start(dir.path()) else {
        return;
    };
    let out = dir.path().join("out.jsonl");
    let mut opts = ReceiveOptions::new(broker.addr());
    opts.out = Some(out.clone());
    opts.duration = Some(Duration::from_secs(9));
    opts.client_id = "receive-test-2".into();
    let (stats_tx, mut stats_rx) = watch::channel(ReceiveSummary::default());
    let stop = CancellationToken::new();
    let task = tokio::spawn(run(opts, stop.clone(), stats_tx));
    let batches = |s: &ReceiveSummary| s.vehicles.get("car").map_or(0, |v| v.batches);

    wait_stats(&mut stats_rx, "the subscription", |s| s.subscribes >= 1).await;
    let t0 = crate::now_us();
    let a = samples(t0, &[(0, 1.0)]);
    publish_all(&broker.addr(), "pub-a", &[data("car", id(1, 0), &a)]).await;
    wait_stats(&mut stats_rx, "the first batch", |s| batches(s) == 1).await;

    // The restarted broker has no persistence: the receiver must subscribe again.
    broker.kill();
    broker.spawn();
    wait_stats(&mut stats_rx, "the re-subscription", |s| s.subscribes >= 2).await;
    let b = samples(t0 + 1000, &[(0, 2.0)]);
    publish_all(&broker.addr(), "pub-b", &[data("car", id(1, 1), &b)]).await;
    wait_stats(&mut stats_rx, "the second batch", |s| batches(s) == 2).await;

    stop.cancel();
    let summary = tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("receiver exits on shutdown")
        .expect("receiver task")
        .expect("receiver result");
    assert_eq!((summary.connects, summary.subscribes), (2, 2));
    assert_eq!(summary.vehicles["car"].samples, 2);
    let mut expected = sample_lines("car", id(1, 0), &a);
    expected.extend(sample_lines("car", id(1, 1), &b));
    assert_eq!(read_lines(&out), expected);
}

/// MQTT 5 with a state file: batches published while the receiver is away are kept by the
/// broker (the session does not expire) and written once the receiver is back, exactly once.
#[tokio::test]
async fn mqtt5_session_outlives_the_receiver() {
    let dir = tempfile::tempdir().expect("tempdir");
    let Some(broker) = Broker::start(dir.path()) else {
        return;
    };
    let out = dir.path().join("out.jsonl");
    let start = || {
        let mut opts = ReceiveOptions::new(broker.addr());
        opts.out = Some(out.clone());
        opts.state = Some(dir.path().join("out.jsonl.state"));
        opts.mqtt_version = MqttVersion::V5;
        opts.duration = Some(Duration::from_secs(8));
        opts.client_id = "receive-test-v5".into();
        let (stats_tx, stats_rx) = watch::channel(ReceiveSummary::default());
        let stop = CancellationToken::new();
        let task = tokio::spawn(run(opts, stop.clone(), stats_tx));
        (task, stop, stats_rx)
    };
    let batches = |s: &ReceiveSummary| s.vehicles.get("car").map_or(0, |v| v.batches);
    let t0 = crate::now_us();
    let a = samples(t0, &[(0, 1.0), (1, 2.0)]);
    let b = samples(t0 + 1000, &[(0, 3.0)]);

    let (task, stop, mut stats) = start();
    wait_stats(&mut stats, "the subscription", |s| s.subscribes >= 1).await;
    publish_all(&broker.addr(), "pub-v5-a", &[data("car", id(1, 0), &a)]).await;
    wait_stats(&mut stats, "the first batch", |s| batches(s) == 1).await;
    stop.cancel();
    let first = task.await.expect("task").expect("first receiver");
    assert_eq!(first.vehicles["car"].samples, 2);

    // Away: the broker must hold these for the session.
    publish_all(
        &broker.addr(),
        "pub-v5-b",
        &[data("car", id(1, 1), &b), data("car", id(1, 0), &a)],
    )
    .await;
    let (task, stop, mut stats) = start();
    wait_stats(&mut stats, "the batches kept by the broker", |s| {
        batches(s) == 2 && s.vehicles["car"].duplicate_batches == 1
    })
    .await;
    stop.cancel();
    let second = task.await.expect("task").expect("second receiver");
    assert_eq!(second.connects, 1);
    let mut expected = sample_lines("car", id(1, 0), &a);
    expected.extend(sample_lines("car", id(1, 1), &b));
    assert_eq!(read_lines(&out), expected);
}

#[test]
fn rejects_an_invalid_topic_filter() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let mut opts = ReceiveOptions::new(BrokerAddr::Unix("/nonexistent".into()));
    opts.topic = "pitlink/#/batch".into();
    let (tx, _rx) = watch::channel(ReceiveSummary::default());
    let err = rt
        .block_on(run(opts, CancellationToken::new(), tx))
        .expect_err("invalid filter");
    assert!(err.to_string().contains("not a valid MQTT filter"), "{err}");
}

#[test]
fn renders_an_empty_summary() {
    let text = render_summary(&ReceiveSummary::default());
    assert_eq!(
        text,
        "0 messages, 0 bad payloads, 0 connections\nno batches received\n"
    );
}
