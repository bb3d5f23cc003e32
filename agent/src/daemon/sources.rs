//! Source tasks: each owns one source and hands its readings to the core through an
//! [`Outlet`] (which never blocks: when the core falls behind, the outlet counts drops).

use crate::config::{ReplaySpeed, ReplayWord, SourceConfig, SourceKind};
use sensor_drivers::serial::PortSpec;
use sensor_drivers::synthetic::Synthetic;
use sensor_drivers::{Backoff, Outlet, Reading, candump, line, nmea, slcan, socketcan};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How often the synthetic generator wakes; a 1 kHz channel yields 10 samples per wake.
const TICK: Duration = Duration::from_millis(10);

/// Runs source `cfg` until `stop` is cancelled. Device errors never end it: the source reopens
/// its device with backoff and counts what it lost.
pub async fn run(cfg: SourceConfig, out: Outlet, stop: CancellationToken) {
    // Keys were checked by `Config::validate`; the defaults here are the documented ones.
    let port = |default_baud| PortSpec {
        path: cfg.device.clone().unwrap_or_default(),
        baud: cfg.baud.unwrap_or(default_baud),
    };
    match cfg.kind {
        SourceKind::Synthetic => {
            out.stats().set_connected(true);
            synthetic(&cfg, &out, &stop).await;
        }
        SourceKind::Candump => {
            let opts = candump::ReplayOptions {
                path: cfg.path.clone().unwrap_or_default(),
                speed: match cfg.speed {
                    None | Some(ReplaySpeed::Word(ReplayWord::Recorded)) => {
                        candump::Speed::Recorded
                    }
                    Some(ReplaySpeed::Word(ReplayWord::Max)) => candump::Speed::FlatOut,
                    Some(ReplaySpeed::Factor(f)) => candump::Speed::Factor(f),
                },
                looping: cfg.looped.unwrap_or(false),
                interfaces: cfg.interfaces.clone().unwrap_or_default(),
            };
            candump::run_replay(opts, out.clone(), stop.clone()).await;
        }
        SourceKind::Socketcan => {
            let mut opts =
                socketcan::SocketCanOptions::new(cfg.interface.clone().unwrap_or_default());
            opts.fd = cfg.fd.unwrap_or(true);
            opts.filters = cfg.filters.clone().unwrap_or_default();
            opts.rcvbuf = cfg.rcvbuf_kb.map(|kb| kb as usize * 1024);
            socketcan::run_socketcan(opts, out.clone(), stop.clone()).await;
        }
        SourceKind::Slcan => {
            let kbit = cfg.bitrate.unwrap_or(500);
            let Some(bitrate) = slcan::Bitrate::from_bps(kbit * 1000) else {
                // Unreachable after validation; said rather than assumed.
                out.stats()
                    .set_error(format!("bitrate {kbit} kbit/s is not an slcan rate"));
                stop.cancelled().await;
                return;
            };
            let mut c = slcan::SlcanConfig::new(port(115_200), bitrate);
            c.listen_only = cfg.listen_only.unwrap_or(true);
            c.timestamps = cfg.timestamps.unwrap_or(false);
            slcan::run(c, out.clone(), Backoff::default(), stop.clone()).await;
        }
        SourceKind::Nmea => {
            let c = nmea::NmeaConfig { port: port(9600) };
            nmea::run(c, out.clone(), Backoff::default(), stop.clone()).await;
        }
        SourceKind::Line => match cfg.line_spec() {
            Ok(spec) => {
                let c = line::LineConfig {
                    port: port(115_200),
                    spec,
                    max_line: line::DEFAULT_MAX_LINE,
                };
                line::run(c, out.clone(), Backoff::default(), stop.clone()).await;
            }
            Err(e) => {
                out.stats().set_error(&e);
                stop.cancelled().await;
            }
        },
    }
    out.stats().set_connected(false);
}

async fn synthetic(cfg: &SourceConfig, out: &Outlet, stop: &CancellationToken) {
    let mut g = Synthetic::new(cfg.synthetic_spec(), crate::now_us());
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut buf = Vec::new();
    loop {
        let stopping = tokio::select! {
            _ = stop.cancelled() => true,
            _ = tick.tick() => false,
        };
        let now = crate::now_us();
        // At most one second of grid points per wake keeps a chunk bounded.
        g.poll(now, u64::from(g.spec().rate_hz), &mut buf);
        out.emit(now, buf.drain(..).map(Reading::Value).collect());
        if stopping {
            break;
        }
    }
}
