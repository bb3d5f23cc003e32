//! Source tasks: each owns one source and hands its readings to the core through an
//! [`Outlet`] (which never blocks: when the core falls behind, the outlet counts drops).

use crate::config::{SourceConfig, SourceKind};
use sensor_drivers::synthetic::Synthetic;
use sensor_drivers::{Outlet, Reading};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How often the synthetic generator wakes; a 1 kHz channel yields 10 samples per wake.
const TICK: Duration = Duration::from_millis(10);

/// Runs source `cfg` until `stop` is cancelled. Device errors never end it: the source reopens
/// its device with backoff and counts what it lost.
pub async fn run(cfg: SourceConfig, out: Outlet, stop: CancellationToken) {
    out.stats().set_connected(true);
    match cfg.kind {
        SourceKind::Synthetic => synthetic(&cfg, &out, &stop).await,
        other => {
            out.stats().set_connected(false);
            out.stats().set_error(format!(
                "{} sources are not available in this build",
                other.name()
            ));
            tracing::error!("{} sources are not available in this build", other.name());
            stop.cancelled().await;
        }
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
