//! The link emulator over real TCP sockets: bytes arrive intact and in order, a blackhole holds
//! them without closing the connection, a reset cuts it, an outage refuses to carry new
//! connections until it ends.

use std::net::SocketAddr;
use std::time::Duration;

use modem_hal::sim::link::{LinkEmulator, LinkParams};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// An upstream that echoes every byte back.
async fn echo_server() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    addr
}

fn fast() -> LinkParams {
    LinkParams {
        rate_bps: 50e6,
        latency: Duration::from_millis(2),
        jitter: Duration::from_millis(3),
        up: true,
    }
}

async fn read_exact_within(s: &mut TcpStream, n: usize, within: Duration) -> Option<Vec<u8>> {
    let mut buf = vec![0u8; n];
    match tokio::time::timeout(within, s.read_exact(&mut buf)).await {
        Ok(Ok(_)) => Some(buf),
        _ => None,
    }
}

#[tokio::test]
async fn bytes_arrive_intact_and_in_order_both_ways() {
    let up = echo_server().await;
    let link = LinkEmulator::spawn("127.0.0.1:0".parse().expect("addr"), up, fast(), 1)
        .await
        .expect("spawn");
    let mut s = TcpStream::connect(link.addr()).await.expect("connect");
    let data: Vec<u8> = (0..300_000u32).map(|i| (i * 7 + i / 251) as u8).collect();
    let (mut r, mut w) = s.split();
    let send = async {
        for c in data.chunks(1000) {
            w.write_all(c).await.expect("write");
        }
    };
    let mut back = vec![0u8; data.len()];
    let recv = async { r.read_exact(&mut back).await.expect("echo") };
    tokio::join!(send, recv);
    assert!(back == data, "the echo differs");
    let c = link.counters();
    assert_eq!(c.connections, 1);
    assert_eq!(c.bytes_up, data.len() as u64);
    assert_eq!(c.bytes_down, data.len() as u64);
}

#[tokio::test]
async fn a_blackhole_holds_data_without_closing_and_releases_it_after() {
    let up = echo_server().await;
    let link = LinkEmulator::spawn("127.0.0.1:0".parse().expect("addr"), up, fast(), 2)
        .await
        .expect("spawn");
    let mut s = TcpStream::connect(link.addr()).await.expect("connect");
    s.write_all(b"before").await.expect("write");
    assert_eq!(
        read_exact_within(&mut s, 6, Duration::from_secs(10))
            .await
            .as_deref(),
        Some(&b"before"[..])
    );
    link.blackhole(true);
    s.write_all(b"during")
        .await
        .expect("a blackhole accepts writes");
    assert_eq!(
        read_exact_within(&mut s, 6, Duration::from_millis(300)).await,
        None,
        "nothing comes back through a blackhole"
    );
    link.blackhole(false);
    assert_eq!(
        read_exact_within(&mut s, 6, Duration::from_secs(10))
            .await
            .as_deref(),
        Some(&b"during"[..]),
        "held data is delivered once the link carries again"
    );
}

#[tokio::test]
async fn a_reset_cuts_open_connections_and_new_ones_work() {
    let up = echo_server().await;
    let link = LinkEmulator::spawn("127.0.0.1:0".parse().expect("addr"), up, fast(), 3)
        .await
        .expect("spawn");
    let mut s = TcpStream::connect(link.addr()).await.expect("connect");
    s.write_all(b"x").await.expect("write");
    assert!(
        read_exact_within(&mut s, 1, Duration::from_secs(10))
            .await
            .is_some()
    );
    link.reset();
    let mut buf = [0u8; 1];
    let r = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf))
        .await
        .expect("the reset arrives");
    assert!(
        matches!(r, Ok(0))
            || r.as_ref()
                .is_err_and(|e| e.kind() == std::io::ErrorKind::ConnectionReset),
        "{r:?}"
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while link.counters().resets < 1 {
        assert!(tokio::time::Instant::now() < deadline, "reset counted");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut s2 = TcpStream::connect(link.addr()).await.expect("reconnect");
    s2.write_all(b"y").await.expect("write");
    assert_eq!(
        read_exact_within(&mut s2, 1, Duration::from_secs(10))
            .await
            .as_deref(),
        Some(&b"y"[..])
    );
}

#[tokio::test]
async fn a_new_connection_during_an_outage_carries_nothing_until_it_ends() {
    let up = echo_server().await;
    let mut p = fast();
    p.up = false;
    let link = LinkEmulator::spawn("127.0.0.1:0".parse().expect("addr"), up, p, 4)
        .await
        .expect("spawn");
    let mut s = TcpStream::connect(link.addr()).await.expect("connect");
    s.write_all(b"hello").await.expect("write");
    assert_eq!(
        read_exact_within(&mut s, 5, Duration::from_millis(300)).await,
        None
    );
    link.update(|p| p.up = true);
    assert_eq!(
        read_exact_within(&mut s, 5, Duration::from_secs(10))
            .await
            .as_deref(),
        Some(&b"hello"[..])
    );
}

#[tokio::test]
async fn a_slow_link_pushes_back_on_the_sender() {
    let up = echo_server().await;
    let slow = LinkParams {
        rate_bps: 80_000.0, // 10 kB/s
        latency: Duration::from_millis(1),
        jitter: Duration::ZERO,
        up: true,
    };
    let link = LinkEmulator::spawn("127.0.0.1:0".parse().expect("addr"), up, slow, 5)
        .await
        .expect("spawn");
    let s = TcpStream::connect(link.addr()).await.expect("connect");
    let (_r, mut w) = s.into_split();
    // Far more than the link carries in a second: the writer must block, not buffer it all.
    let chunk = vec![0u8; 64 * 1024];
    let mut written = 0usize;
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        loop {
            w.write_all(&chunk).await.expect("write");
            written += chunk.len();
        }
    })
    .await;
    // Relay buffers (2 × 256 KiB) plus socket buffers bound what a sender can push.
    assert!(
        written < 16 << 20,
        "{written} bytes were accepted by a 10 kB/s link"
    );
    assert!(link.counters().bytes_up < 200_000, "{:?}", link.counters());
}

#[tokio::test]
async fn a_connection_given_up_during_an_outage_never_reaches_the_far_end() {
    // The far end counts the connections it sees.
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let up = l.local_addr().expect("addr");
    let seen = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let s2 = seen.clone();
    tokio::spawn(async move {
        while let Ok((_s, _)) = l.accept().await {
            s2.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    });
    let mut p = fast();
    p.up = false;
    let link = LinkEmulator::spawn("127.0.0.1:0".parse().expect("addr"), up, p, 6)
        .await
        .expect("spawn");
    let mut s = TcpStream::connect(link.addr()).await.expect("connect");
    s.write_all(b"CONNECT").await.expect("write");
    drop(s);
    // The relay notices the client left, then the link comes back.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while link.counters().connections < 1 {
        assert!(tokio::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    link.blackhole(false);
    // A fresh connection is carried; the abandoned one never was.
    let mut s = TcpStream::connect(link.addr()).await.expect("connect");
    s.write_all(b"x").await.expect("write");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while seen.load(std::sync::atomic::Ordering::SeqCst) < 1 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the live connection arrives"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(seen.load(std::sync::atomic::Ordering::SeqCst), 1);
    assert_eq!(link.counters().bytes_up, 1, "{:?}", link.counters());
}
