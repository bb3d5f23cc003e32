//! The link emulator: a TCP relay per simulated modem in front of the broker that enforces a
//! bandwidth, one-way latency and jitter, stalls (a blackhole that keeps the connection open),
//! resets and outages, all changeable at run time ([`LinkControl`]).
//!
//! [`Shaper`] decides, sans-IO, when each chunk is delivered: chunks are serialised at the link
//! rate one after the other (a token bucket with a one-chunk burst), then delayed by the one-way
//! latency plus jitter, never overtaking each other (TCP keeps order). The relay ([`LinkEmulator`])
//! reads only while its delay line holds less than `buffer_bytes`, so a slow link pushes back on
//! the sender like a real bottleneck queue.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::Serialize;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::time::Instant;

/// How the link behaves now.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct LinkParams {
    /// Throughput in bit/s in each direction; 0 stalls the link.
    pub rate_bps: f64,
    /// One-way latency.
    pub latency: Duration,
    /// Jitter: each chunk gets up to this much extra delay (uniform).
    pub jitter: Duration,
    /// False: a blackhole. Nothing moves, connections stay open, new ones are accepted but
    /// carry nothing (a dead radio path, not a refused connection).
    pub up: bool,
}

impl Default for LinkParams {
    fn default() -> Self {
        Self {
            rate_bps: 10e6,
            latency: Duration::from_millis(20),
            jitter: Duration::ZERO,
            up: true,
        }
    }
}

/// When chunks of one direction are delivered.
#[derive(Debug, Clone)]
pub struct Shaper {
    busy_until: Duration,
    last_delivery: Duration,
    rng: u64,
}

impl Shaper {
    /// A shaper whose jitter comes from `seed`.
    pub fn new(seed: u64) -> Self {
        Self {
            busy_until: Duration::ZERO,
            last_delivery: Duration::ZERO,
            rng: seed | 1,
        }
    }

    /// A chunk of `len` bytes offered at `now`: when it arrives at the far end, or `None` when
    /// the link carries nothing (rate 0 or down; offer it again later).
    pub fn admit(&mut self, now: Duration, len: usize, p: &LinkParams) -> Option<Duration> {
        if !p.up || p.rate_bps <= 0.0 || !p.rate_bps.is_finite() {
            return None;
        }
        let start = self.busy_until.max(now);
        let tx = Duration::from_secs_f64(len as f64 * 8.0 / p.rate_bps);
        self.busy_until = start + tx;
        let jitter = if p.jitter.is_zero() {
            Duration::ZERO
        } else {
            // xorshift64
            self.rng ^= self.rng << 13;
            self.rng ^= self.rng >> 7;
            self.rng ^= self.rng << 17;
            p.jitter
                .mul_f64((self.rng >> 11) as f64 / (1u64 << 53) as f64)
        };
        let at = (self.busy_until + p.latency + jitter).max(self.last_delivery);
        self.last_delivery = at;
        Some(at)
    }

    /// Forgets the serialisation backlog (after a stall the link restarts empty).
    pub fn idle(&mut self, now: Duration) {
        self.busy_until = self.busy_until.min(now);
    }
}

/// Counters of one emulated link.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct LinkCounters {
    /// Connections accepted.
    pub connections: u64,
    /// Connections cut by [`LinkControl::reset`].
    pub resets: u64,
    /// Bytes carried towards the broker.
    pub bytes_up: u64,
    /// Bytes carried towards the client.
    pub bytes_down: u64,
}

#[derive(Debug, Default)]
struct Counters {
    connections: AtomicU64,
    resets: AtomicU64,
    bytes_up: AtomicU64,
    bytes_down: AtomicU64,
}

/// Changes a running link.
#[derive(Debug, Clone)]
pub struct LinkControl {
    params: watch::Sender<LinkParams>,
    reset: watch::Sender<u64>,
    counters: Arc<Counters>,
    addr: SocketAddr,
}

impl LinkControl {
    /// Where clients connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The current parameters.
    pub fn params(&self) -> LinkParams {
        *self.params.borrow()
    }

    /// Sets the parameters (from now on, for data not yet on its way).
    pub fn set(&self, p: LinkParams) {
        self.params.send_replace(p);
    }

    /// Changes the parameters with `f`.
    pub fn update(&self, f: impl FnOnce(&mut LinkParams)) {
        self.params.send_modify(f);
    }

    /// Blackholes the link (true) or lets it carry again (false).
    pub fn blackhole(&self, on: bool) {
        self.update(|p| p.up = !on);
    }

    /// Cuts every open connection with a TCP reset.
    pub fn reset(&self) {
        self.reset.send_modify(|n| *n += 1);
    }

    /// Counters so far.
    pub fn counters(&self) -> LinkCounters {
        LinkCounters {
            connections: self.counters.connections.load(Ordering::Relaxed),
            resets: self.counters.resets.load(Ordering::Relaxed),
            bytes_up: self.counters.bytes_up.load(Ordering::Relaxed),
            bytes_down: self.counters.bytes_down.load(Ordering::Relaxed),
        }
    }
}

/// Starts emulated links.
#[derive(Debug)]
pub struct LinkEmulator;

/// Bytes a direction holds in its delay line before it stops reading.
const BUFFER_BYTES: usize = 256 * 1024;
/// Largest chunk read at once.
const CHUNK: usize = 16 * 1024;

impl LinkEmulator {
    /// Listens on `listen` (port 0 for any) and relays every connection to `upstream` under
    /// `params`. The relay runs until the runtime stops. `seed` drives the jitter.
    pub async fn spawn(
        listen: SocketAddr,
        upstream: SocketAddr,
        params: LinkParams,
        seed: u64,
    ) -> std::io::Result<LinkControl> {
        let listener = TcpListener::bind(listen).await?;
        let addr = listener.local_addr()?;
        let (ptx, prx) = watch::channel(params);
        let (rtx, rrx) = watch::channel(0u64);
        let counters = Arc::new(Counters::default());
        let ctl = LinkControl {
            params: ptx,
            reset: rtx,
            counters: counters.clone(),
            addr,
        };
        let epoch = Instant::now();
        tokio::spawn(async move {
            let mut n = 0u64;
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                };
                n += 1;
                counters.connections.fetch_add(1, Ordering::Relaxed);
                let (prx, rrx, counters) = (prx.clone(), rrx.clone(), counters.clone());
                let seed = seed ^ n.wrapping_mul(0x9E37_79B9_7F4A_7C15);
                tokio::spawn(async move {
                    let _ = relay(client, upstream, prx, rrx, counters, epoch, seed).await;
                });
            }
        });
        Ok(ctl)
    }
}

async fn relay(
    client: TcpStream,
    upstream: SocketAddr,
    params: watch::Receiver<LinkParams>,
    mut reset: watch::Receiver<u64>,
    counters: Arc<Counters>,
    epoch: Instant,
    seed: u64,
) -> std::io::Result<()> {
    reset.mark_unchanged();
    let mut client = client;
    // A connection opened while the link is down gets nowhere: nothing reaches the far end
    // until the link is up, and if the client gives up first, the far end never hears of it
    // (a SYN lost in a dead radio path, not a ghost session replayed later).
    let mut early = Vec::new();
    let mut p = params.clone();
    loop {
        if p.borrow_and_update().up {
            break;
        }
        let mut buf = [0u8; 4096];
        tokio::select! {
            r = client.read(&mut buf), if early.len() < BUFFER_BYTES => match r {
                Ok(0) | Err(_) => return Ok(()),
                Ok(n) => early.extend_from_slice(&buf[..n]),
            },
            r = p.changed() => if r.is_err() { return Ok(()) },
            _ = reset.changed() => {
                counters.resets.fetch_add(1, Ordering::Relaxed);
                socket2::SockRef::from(&client).set_linger(Some(Duration::ZERO))?;
                return Ok(());
            }
        }
    }
    let mut server = TcpStream::connect(upstream).await?;
    client.set_nodelay(true)?;
    server.set_nodelay(true)?;
    if !early.is_empty() {
        server.write_all(&early).await?;
        counters
            .bytes_up
            .fetch_add(early.len() as u64, Ordering::Relaxed);
    }
    let cut = {
        let (cr, cw) = client.split();
        let (sr, sw) = server.split();
        let up = pump(cr, sw, params.clone(), epoch, seed, counters.clone(), true);
        let down = pump(sr, cw, params, epoch, seed ^ 0xD0, counters.clone(), false);
        tokio::select! {
            r = async { tokio::try_join!(up, down) } => {
                r?;
                false
            }
            _ = reset.changed() => true,
        }
    };
    if cut {
        counters.resets.fetch_add(1, Ordering::Relaxed);
        // Close with a reset, as a modem losing its bearer does, not a polite FIN.
        for s in [&client, &server] {
            socket2::SockRef::from(s).set_linger(Some(Duration::ZERO))?;
        }
    }
    Ok(())
}

async fn pump<R: AsyncRead + Unpin, W: AsyncWrite + Unpin>(
    mut from: R,
    mut to: W,
    mut params: watch::Receiver<LinkParams>,
    epoch: Instant,
    seed: u64,
    counters: Arc<Counters>,
    upward: bool,
) -> std::io::Result<()> {
    let mut shaper = Shaper::new(seed);
    // Read but not yet admitted (the link was down), then in flight with arrival times.
    let mut waiting: VecDeque<Vec<u8>> = VecDeque::new();
    let mut line: VecDeque<(Duration, Vec<u8>)> = VecDeque::new();
    let mut held = 0usize;
    let mut eof = false;
    let mut buf = vec![0u8; CHUNK];
    loop {
        let p = *params.borrow_and_update();
        let now = epoch.elapsed();
        if p.up {
            while let Some(chunk) = waiting.pop_front() {
                match shaper.admit(now, chunk.len(), &p) {
                    Some(at) => line.push_back((at, chunk)),
                    None => {
                        waiting.push_front(chunk);
                        break;
                    }
                }
            }
        } else {
            shaper.idle(now);
        }
        // Deliver what is due (nothing moves in a blackhole).
        while p.up
            && let Some((at, _)) = line.front()
            && *at <= now
        {
            let Some((_, chunk)) = line.pop_front() else {
                break;
            };
            to.write_all(&chunk).await?;
            held -= chunk.len();
            let c = if upward {
                &counters.bytes_up
            } else {
                &counters.bytes_down
            };
            c.fetch_add(chunk.len() as u64, Ordering::Relaxed);
        }
        if eof && held == 0 && p.up {
            // Pass the half-close on (not through a blackhole) and let the other direction
            // finish.
            to.shutdown().await?;
            return Ok(());
        }
        let next = if p.up {
            line.front().map(|(at, _)| epoch + *at)
        } else {
            None
        };
        let can_read = !eof && held < BUFFER_BYTES;
        tokio::select! {
            r = from.read(&mut buf), if can_read => {
                let n = r?;
                if n == 0 {
                    eof = true;
                } else {
                    held += n;
                    waiting.push_back(buf[..n].to_vec());
                }
            }
            _ = async {
                match next {
                    Some(t) => tokio::time::sleep_until(t).await,
                    None => std::future::pending().await,
                }
            } => {}
            r = params.changed() => {
                if r.is_err() {
                    return Ok(());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(rate_bps: f64, latency_ms: u64) -> LinkParams {
        LinkParams {
            rate_bps,
            latency: Duration::from_millis(latency_ms),
            jitter: Duration::ZERO,
            up: true,
        }
    }

    #[test]
    fn chunks_are_serialised_at_the_rate_then_delayed_by_the_latency() {
        let mut s = Shaper::new(1);
        let link = p(8_000.0, 50); // 1000 bytes per second
        let t0 = Duration::from_secs(1);
        assert_eq!(
            s.admit(t0, 100, &link),
            Some(t0 + Duration::from_millis(150))
        );
        // Queued behind the first chunk.
        assert_eq!(
            s.admit(t0, 100, &link),
            Some(t0 + Duration::from_millis(250))
        );
        // After the queue drained, the next starts at once.
        let t1 = Duration::from_secs(5);
        assert_eq!(
            s.admit(t1, 1000, &link),
            Some(t1 + Duration::from_millis(1050))
        );
    }

    #[test]
    fn a_down_or_stalled_link_admits_nothing() {
        let mut s = Shaper::new(1);
        let mut link = p(1e6, 10);
        link.up = false;
        assert_eq!(s.admit(Duration::ZERO, 10, &link), None);
        assert_eq!(s.admit(Duration::ZERO, 10, &p(0.0, 10)), None);
    }

    #[test]
    fn jitter_never_reorders_and_stays_within_bounds() {
        let mut s = Shaper::new(7);
        let mut link = p(1e9, 20);
        link.jitter = Duration::from_millis(30);
        let mut last = Duration::ZERO;
        let mut spread = (Duration::MAX, Duration::ZERO);
        for i in 0..1000u64 {
            let now = Duration::from_millis(i);
            let at = s.admit(now, 10, &link).expect("up");
            assert!(at >= last);
            last = at;
            let extra = at - now;
            spread = (spread.0.min(extra), spread.1.max(extra));
        }
        assert!(spread.0 >= Duration::from_millis(20));
        assert!(spread.1 <= Duration::from_millis(51));
        assert!(
            spread.1 - spread.0 > Duration::from_millis(10),
            "{spread:?}"
        );
    }

    #[test]
    fn throughput_over_a_long_run_matches_the_rate() {
        let mut s = Shaper::new(1);
        let link = p(2e6, 30);
        let mut last = Duration::ZERO;
        // Offer 1 MB at once.
        for _ in 0..64 {
            last = s.admit(Duration::ZERO, 16_384, &link).expect("up");
        }
        let secs = (last - link.latency).as_secs_f64();
        let rate = 64.0 * 16_384.0 * 8.0 / secs;
        assert!((rate - 2e6).abs() < 1e3, "{rate}");
    }
}
