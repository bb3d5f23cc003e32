//! Source tasks: each owns one source and hands its samples to the core in chunks.

use crate::config::{SourceConfig, SourceKind};
use sensor_drivers::Sample;
use sensor_drivers::synthetic::Synthetic;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Samples from source `source`, read at `at_us`.
#[derive(Debug)]
pub struct Chunk {
    pub source: usize,
    pub at_us: u64,
    pub samples: Vec<Sample>,
}

/// Counters a source task shares with the core (for status).
#[derive(Debug, Default)]
pub struct SourceShared {
    pub samples: AtomicU64,
    pub drops: AtomicU64,
    pub parse_errors: AtomicU64,
}

impl SourceShared {
    pub fn samples(&self) -> u64 {
        self.samples.load(Ordering::Relaxed)
    }
    pub fn drops(&self) -> u64 {
        self.drops.load(Ordering::Relaxed)
    }
}

/// How often a source task wakes; a 1 kHz channel yields 10 samples per wake.
const TICK: Duration = Duration::from_millis(10);

pub async fn run(
    index: usize,
    cfg: SourceConfig,
    tx: mpsc::Sender<Chunk>,
    shared: Arc<SourceShared>,
    stop: CancellationToken,
) {
    match cfg.kind {
        SourceKind::Synthetic => {
            let mut g = Synthetic::new(cfg.synthetic_spec(), crate::now_us());
            let mut tick = tokio::time::interval(TICK);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                let stopping = tokio::select! {
                    _ = stop.cancelled() => true,
                    _ = tick.tick() => false,
                };
                let now = crate::now_us();
                let mut out = Vec::new();
                // At most one second of grid points per wake keeps a chunk bounded.
                g.poll(now, u64::from(g.spec().rate_hz), &mut out);
                if !out.is_empty() {
                    let n = out.len() as u64;
                    match tx.try_send(Chunk {
                        source: index,
                        at_us: now,
                        samples: out,
                    }) {
                        Ok(()) => {
                            shared.samples.fetch_add(n, Ordering::Relaxed);
                        }
                        Err(_) => {
                            // The core is not keeping up: drop and count, never block the source.
                            shared.drops.fetch_add(n, Ordering::Relaxed);
                        }
                    }
                }
                if stopping {
                    break;
                }
            }
        }
    }
}
