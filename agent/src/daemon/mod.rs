//! Wiring: sources, the core (batcher → codec → queue → scheduler), links and diagnostics.
//!
//! Threads: the core runs on its own thread with a single-threaded runtime, so the queue's
//! fdatasync never stalls the sources or the links; sources, links and the diagnostics socket run
//! on the caller's tokio runtime. Shutdown: sources stop first, the core flushes what they sent,
//! waits (bounded) for outstanding acks, makes everything durable, then the links disconnect.

mod core;
pub mod modems;
pub mod notify;
pub mod radio;
mod sources;

use crate::bond::link::{LinkCmd, LinkEvent, LinkTask};
use crate::config::Config;
use crate::diag::Status;
use crate::mqtt::{BrokerAddr, Session};
use crate::queue::{Queue, QueueOptions};
use anyhow::Context;
use sensor_drivers::{Outlet, SourceStats};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// Knobs that are not configuration (tests, demo, benchmarks).
#[derive(Debug, Clone)]
pub struct StartOptions {
    /// How long shutdown waits for outstanding acks before giving up (they stay queued).
    pub drain_timeout: Duration,
    /// Serve the diagnostics socket.
    pub diag_socket: bool,
    /// Per-batch events with their times, for benchmarks and tests (`None`: nothing is traced,
    /// and the core's normal path pays one branch per event).
    pub trace: Option<mpsc::UnboundedSender<TraceEvent>>,
    /// Test hook: block the core thread for good this long after start (a stuck pipeline, for
    /// the watchdog's test). Never set in normal operation.
    #[doc(hidden)]
    pub stall_core_after: Option<Duration>,
}

/// One batch event of the core, stamped with the core's clock (µs since the Unix epoch).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TraceEvent {
    /// A batch was appended to the queue (`samples` 0 for control batches: run, gap notice).
    Queued {
        id: crate::codec::BatchId,
        at_us: u64,
        samples: u32,
        bytes: u64,
    },
    /// A publish of the batch was handed to `link`.
    Sent {
        link: usize,
        id: crate::codec::BatchId,
        at_us: u64,
        bytes: u64,
    },
    /// The broker acknowledged the batch on `link` (duplicate acks included).
    Acked {
        link: usize,
        id: crate::codec::BatchId,
        at_us: u64,
    },
}

impl Default for StartOptions {
    fn default() -> Self {
        StartOptions {
            drain_timeout: Duration::from_secs(3),
            diag_socket: true,
            trace: None,
            stall_core_after: None,
        }
    }
}

/// A running daemon. Cancel [`RunningDaemon::shutdown`] and await [`RunningDaemon::wait`].
#[derive(Debug)]
pub struct RunningDaemon {
    pub shutdown: CancellationToken,
    pub status: watch::Receiver<Status>,
    core: std::thread::JoinHandle<anyhow::Result<()>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    links_stop: CancellationToken,
}

impl RunningDaemon {
    /// Waits for the core to finish its shutdown, then for the links and sources.
    pub async fn wait(self) -> anyhow::Result<()> {
        let core = self.core;
        let res = tokio::task::spawn_blocking(move || core.join())
            .await
            .context("core thread join")?;
        self.links_stop.cancel();
        for t in self.tasks {
            let _ = t.await;
        }
        match res {
            Ok(r) => r,
            Err(_) => anyhow::bail!("the core thread panicked"),
        }
    }
}

/// Opens the queue (recovering it), then starts every task. Must be called inside a tokio
/// runtime. Errors here (queue directory unusable, bad TLS files) are fatal and named.
pub fn start(cfg: Config, opts: StartOptions) -> anyhow::Result<RunningDaemon> {
    let (addr, tls) = crate::mqtt::from_config(&cfg.broker)?;
    let (queue, recovery) = Queue::open(QueueOptions {
        dir: cfg.queue.dir.clone(),
        cap_bytes: cfg.queue.max_mb << 20,
        segment_bytes: cfg.queue.segment_mb << 20,
        sync_bytes: cfg.queue.flush_kb << 10,
        vehicle: cfg.vehicle.clone(),
        format_version: cfg.batch.format_version,
    })
    .context("cannot open the queue")?;
    tracing::info!(
        run = queue.run(),
        undelivered = recovery.undelivered,
        corrupt = recovery.corrupt_records,
        truncated = recovery.truncated_bytes,
        "queue recovered from {}",
        cfg.queue.dir.display()
    );

    let shutdown = CancellationToken::new();
    let links_stop = CancellationToken::new();
    let (status_tx, status_rx) = watch::channel(Status::default());
    let mut tasks = Vec::new();

    // Sources → core.
    let (sample_tx, sample_rx) = mpsc::channel(4096);
    let mut shared = Vec::new();
    for (i, s) in cfg.sources.iter().enumerate() {
        let sh = Arc::new(SourceStats::default());
        shared.push(sh.clone());
        let outlet = Outlet::new(i, sample_tx.clone(), sh);
        let span = tracing::info_span!("source", name = %s.name);
        tasks.push(tokio::spawn(
            sources::run(s.clone(), outlet, shutdown.clone()).instrument(span),
        ));
    }
    drop(sample_tx);

    // Links ↔ core.
    let max_in_flight = 32;
    let (event_tx, event_rx) = mpsc::channel::<LinkEvent>(4096);
    let mut link_txs = Vec::new();
    for (i, l) in cfg.links.iter().enumerate() {
        let (tx, rx) = mpsc::channel::<LinkCmd>(max_in_flight * 2);
        link_txs.push(tx);
        let task = LinkTask {
            index: i,
            name: l.name.clone(),
            topic: cfg.data_topic(),
            session: Session {
                addr: l.address.map_or_else(
                    || addr.clone(),
                    |a| BrokerAddr::Tcp {
                        host: a.ip().to_string(),
                        port: a.port(),
                    },
                ),
                client_id: format!("{}-{}", cfg.vehicle, l.name),
                keep_alive: Duration::from_secs(cfg.broker.keep_alive_s),
                clean_session: true,
                credentials: cfg.broker.username.clone().zip(cfg.broker.password.clone()),
                tls: tls.clone(),
                bind_device: l.interface.clone(),
                max_packet: 64 << 20,
                inflight: max_in_flight as u16 + 8,
                manual_acks: false,
            },
        };
        tasks.push(tokio::spawn(task.run(
            rx,
            event_tx.clone(),
            links_stop.clone(),
        )));
    }
    drop(event_tx);

    if let Some(listen) = cfg.metrics.listen {
        let rx = status_rx.clone();
        let stop = links_stop.clone();
        tasks.push(tokio::spawn(async move {
            if let Err(e) = crate::diag::metrics::serve(listen, rx, stop).await {
                tracing::error!("metrics disabled: {e:#}");
            }
        }));
    }

    let (tail_tx, _) = tokio::sync::broadcast::channel(1024);
    if opts.diag_socket {
        let path = cfg.diag.socket.clone();
        let rx = status_rx.clone();
        let stop = links_stop.clone();
        let tail = tail_tx.clone();
        tasks.push(tokio::spawn(async move {
            if let Err(e) = crate::diag::serve(path, rx, tail, stop).await {
                tracing::error!("diagnostics socket disabled: {e:#}");
            }
        }));
    }

    // Modems → radio bands, towers.
    let radio_shared = radio::RadioShared::new(cfg.links.len());
    let (gps_tx, gps_rx) = watch::channel(None);
    tasks.extend(radio::start(
        &cfg,
        radio_shared.clone(),
        status_rx.clone(),
        gps_rx,
        links_stop.clone(),
    ));

    let core = core::Core::new(
        cfg,
        queue,
        recovery,
        shared,
        link_txs,
        status_tx,
        max_in_flight,
        opts.drain_timeout,
        radio_shared,
        gps_tx,
        tail_tx,
        opts.trace,
    );
    let sd = shutdown.clone();
    let stall = opts.stall_core_after;
    let core = std::thread::Builder::new()
        .name("pitlink-core".into())
        .spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("core runtime")?;
            if let Some(after) = stall {
                rt.spawn(async move {
                    tokio::time::sleep(after).await;
                    tracing::warn!("test hook: the core thread stops here");
                    loop {
                        std::thread::park();
                    }
                });
            }
            rt.block_on(core.run(sample_rx, event_rx, sd))
        })
        .context("cannot start the core thread")?;

    Ok(RunningDaemon {
        shutdown,
        status: status_rx,
        core,
        tasks,
        links_stop,
    })
}
