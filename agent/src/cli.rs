//! The command line: `pitlink [--config FILE] <command>`.

use crate::config::{self, Config};
use crate::mqtt::{BrokerAddr, TlsFiles};
use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

#[derive(Debug, Parser)]
#[command(
    name = "pitlink",
    version,
    about = "In-car telemetry agent: sensors → crash-safe disk queue → bonded cellular MQTT links"
)]
pub struct Cli {
    /// Configuration file.
    #[arg(long, global = true, value_name = "FILE", default_value = config::DEFAULT_PATH)]
    pub config: PathBuf,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the agent (what the systemd service runs).
    Run,
    /// Validate the configuration file and exit (non-zero, with file:line:col, on an error).
    CheckConfig {
        /// Print the effective configuration (defaults filled in) as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show the running agent's sources, queue and links.
    Status {
        #[arg(long)]
        json: bool,
        /// Diagnostics socket (default: [diag] socket of the config, else /run/pitlink/pitlink.sock).
        #[arg(long, value_name = "PATH")]
        socket: Option<PathBuf>,
    },
    /// Show the running agent's sources: rates, errors, drops, reconnects.
    Sources {
        #[arg(long)]
        json: bool,
        /// Diagnostics socket (default: [diag] socket of the config, else /run/pitlink/pitlink.sock).
        #[arg(long, value_name = "PATH")]
        socket: Option<PathBuf>,
    },
    /// Show the running agent's queue: depth, oldest undelivered, disk use, evictions, recovery.
    Queue {
        #[arg(long)]
        json: bool,
        /// Diagnostics socket (default: [diag] socket of the config, else /run/pitlink/pitlink.sock).
        #[arg(long, value_name = "PATH")]
        socket: Option<PathBuf>,
    },
    /// Live readings of a source of the running agent: SOURCE, SOURCE/CHANNEL or SOURCE/0xCANID;
    /// CAN frames are decoded with --dbc.
    Tail {
        /// What to show: `engine`, `engine/3`, `can0/0x1A0`.
        spec: String,
        /// Decode CAN frames with this DBC file.
        #[arg(long, value_name = "FILE")]
        dbc: Option<PathBuf>,
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
        /// Stop after this many lines.
        #[arg(long)]
        count: Option<u64>,
        /// Diagnostics socket (default: [diag] socket of the config, else /run/pitlink/pitlink.sock).
        #[arg(long, value_name = "PATH")]
        socket: Option<PathBuf>,
    },
    /// A live view of the running agent, refreshed every interval until Ctrl-C.
    Top {
        /// Refresh interval.
        #[arg(long, default_value = "1s", value_parser = parse_duration)]
        interval: Duration,
        /// Diagnostics socket (default: [diag] socket of the config, else /run/pitlink/pitlink.sock).
        #[arg(long, value_name = "PATH")]
        socket: Option<PathBuf>,
        /// Stop after this many refreshes (default: until Ctrl-C).
        #[arg(long, hide = true)]
        count: Option<u64>,
    },
    /// Show the tower policy: each modem's serving and locked cell, the learned map, the last
    /// decisions with their reasons.
    Towers {
        #[arg(long)]
        json: bool,
        /// Diagnostics socket (default: [diag] socket of the config, else /run/pitlink/pitlink.sock).
        #[arg(long, value_name = "PATH")]
        socket: Option<PathBuf>,
    },
    /// Per-link view of the running agent's bonded uplink: state, RTT, goodput, in flight,
    /// batches sent / acked / moved / duplicated, heartbeats.
    Links {
        #[arg(long)]
        json: bool,
        /// Diagnostics socket (default: [diag] socket of the config, else /run/pitlink/pitlink.sock).
        #[arg(long, value_name = "PATH")]
        socket: Option<PathBuf>,
    },
    /// Receive batches from the broker (cloud side): deduplicate, account for gaps, write JSONL.
    Receive(Box<ReceiveArgs>),
    /// Run the whole flow locally: simulated sensors, three links, its own broker, a receiver.
    Demo {
        /// How long the sources run (e.g. 20s, 2m).
        #[arg(long, default_value = "60s", value_parser = parse_duration)]
        duration: Duration,
        /// A candump log to replay (looped) as source can0 (default: the RAV4 capture of the
        /// shared test data, when present).
        #[arg(long, value_name = "FILE")]
        candump: Option<PathBuf>,
        /// The DBC of that log, for the receiver's decoded output.
        #[arg(long, value_name = "FILE", requires = "candump")]
        dbc: Option<PathBuf>,
        /// Print the summary as one JSON object on the last line of stdout.
        #[arg(long)]
        json: bool,
        /// Keep the demo's files (queue, broker log, received JSONL) in DIR.
        #[arg(long, value_name = "DIR")]
        keep: Option<PathBuf>,
    },
    /// Decode a candump log with a DBC: one line (or JSON object) per decoded frame.
    Decode(crate::decode::DecodeArgs),
    /// Measure: one JSON object of figures per benchmark, timings beside a same-run baseline.
    #[command(subcommand)]
    Bench(BenchCmd),
    /// Cellular modem tools.
    #[command(subcommand)]
    Modem(ModemCmd),
}

/// `pitlink modem ...`
#[derive(Debug, Subcommand)]
#[command(
    after_help = "Live modem of a link: pitlink modem <LINK> info|cells|lock|release|reselect [--json] (see pitlink modem <LINK> --help)"
)]
pub enum ModemCmd {
    /// Parse AT response text on stdin (as a modem or `mmcli --command` prints it) and print the
    /// radio metrics it holds; lines not understood are listed (exit status 0 all the same).
    Parse {
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
        /// LTE `+QENG` SINR is raw 1/5 dB (dB = raw/5 - 20) on this firmware, not dB.
        #[arg(long)]
        qeng_sinr_fifths: bool,
    },
    /// Run simulated Quectel modems on PTYs following a track scenario (no hardware needed);
    /// prints their paths and a [[links]] snippet, runs until Ctrl-C.
    Sim {
        /// Scenario file (docs/scenario.md); default: the shipped ring.
        #[arg(long, value_name = "FILE")]
        scenario: Option<PathBuf>,
        /// Directory for the modem links modem0, modem1, ... (default: a new temporary one).
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
        /// World speed (1 = real time).
        #[arg(long, default_value_t = 1.0)]
        speed: f64,
        /// Module simulated: rm520n (cell lock) or ec25 (no cell lock).
        #[arg(long, default_value = "rm520n", value_parser = ["rm520n", "ec25"])]
        profile: String,
        /// Outage after a lock, a release or a forced reselection (2-10 s on real modems).
        #[arg(long, default_value = "4s", value_parser = parse_duration)]
        reattach: Duration,
        /// Factor on the modems' command latencies.
        #[arg(long, default_value_t = 1.0)]
        latency_scale: f64,
        /// Also start one emulated link per modem in front of this broker (HOST:PORT).
        #[arg(long, value_name = "ADDR")]
        broker: Option<std::net::SocketAddr>,
        /// Stop after this long.
        #[arg(long, value_parser = parse_duration)]
        duration: Option<Duration>,
        /// Print the modems as one JSON line.
        #[arg(long)]
        json: bool,
    },
    /// `<LINK> info|cells|lock|release|reselect`: ask or command the modem of a configured link.
    #[command(external_subcommand)]
    Link(Vec<String>),
}

/// Ask or command the modem of a configured link (`pitlink modem <LINK> ...`).
#[derive(Debug, Parser)]
#[command(name = "pitlink modem", no_binary_name = true)]
pub struct LinkModemArgs {
    /// The link's name in the [[links]] tables of the configuration.
    pub link: String,
    #[command(subcommand)]
    pub action: LinkModemAction,
}

/// What to do with a link's modem.
#[derive(Debug, Subcommand)]
pub enum LinkModemAction {
    /// Model, firmware, IMEI, SIM, registration and what the modem can be commanded to do.
    Info {
        #[arg(long)]
        json: bool,
    },
    /// Serving cell with RSRP/RSRQ/SINR, and the neighbour cells.
    Cells {
        #[arg(long)]
        json: bool,
    },
    /// Lock to one cell: LTE with --earfcn and --pci; NR with --pci, --arfcn, --scs, --band.
    Lock {
        /// LTE downlink EARFCN.
        #[arg(long, conflicts_with = "arfcn")]
        earfcn: Option<u32>,
        /// Physical cell id.
        #[arg(long)]
        pci: u16,
        /// NR-ARFCN (NR lock).
        #[arg(long, requires_all = ["scs", "band"])]
        arfcn: Option<u32>,
        /// NR subcarrier spacing in kHz: 15, 30, 60 or 120.
        #[arg(long)]
        scs: Option<u16>,
        /// NR band (e.g. 41 for n41).
        #[arg(long)]
        band: Option<u16>,
        #[arg(long)]
        json: bool,
    },
    /// Release every cell lock (the modem selects cells on its own again).
    Release {
        #[arg(long)]
        json: bool,
    },
    /// Force a fresh cell selection (RF off and on: a re-attach outage).
    Reselect {
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum BenchCmd {
    /// Queue append throughput and write amplification against plain sequential writes (and
    /// sled, with the sled-peer feature), and the time to recover a queue whose writer was
    /// SIGKILLed.
    Queue {
        /// Print one JSON object (the default prints it too, pretty).
        #[arg(long)]
        json: bool,
        /// Payload volume per phase, in MiB.
        #[arg(long, default_value_t = 2048)]
        mib: u64,
        /// Time limit per phase.
        #[arg(long, default_value = "20s", value_parser = parse_duration)]
        max_time: Duration,
        /// Directory on the disk to measure (default: the system temp directory).
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
        /// Record payload size in KiB.
        #[arg(long, default_value_t = 16)]
        record_kib: usize,
        /// Queue volume a child writes before it is SIGKILLed for the recovery figure, in MiB
        /// (0 skips the recovery phase).
        #[arg(long, default_value_t = 1024)]
        recovery_mib: u64,
    },
    /// Crash loop: a writer child is SIGKILLed at random moments, then its queue is recovered,
    /// verified and delivered; losses and duplicates are counted (exit status 0 either way).
    Crash {
        /// Print one JSON object only (without it: a summary on stderr, the JSON pretty on stdout).
        #[arg(long)]
        json: bool,
        /// Kill cycles.
        #[arg(long, default_value_t = 200)]
        kills: u64,
        /// Directory on the disk to measure (default: the system temp directory).
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
        /// Group commit interval of the writer, in ms.
        #[arg(long, default_value_t = 100)]
        flush_ms: u64,
        /// Batch payload size in KiB.
        #[arg(long, default_value_t = 4)]
        batch_kib: usize,
        /// Seed of the kill moments (default: from the clock; reported either way).
        #[arg(long)]
        seed: Option<u64>,
    },
    /// CAN ingest: a candump log replayed (looped) through source → batcher → codec → queue
    /// with group commit, flat out, then paced at a fixed frame rate for CPU and memory.
    Ingest {
        /// Print one JSON object only (without it: a summary on stderr, the JSON pretty on stdout).
        #[arg(long)]
        json: bool,
        /// The candump log to replay (default: the RAV4 capture in ../shared/data).
        #[arg(long, value_name = "FILE")]
        input: Option<PathBuf>,
        /// Directory for the queue (default: the system temp directory).
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
        /// Length of the flat-out phase.
        #[arg(long, default_value = "10s", value_parser = parse_duration)]
        flat_out: Duration,
        /// Frames per second of the paced phase.
        #[arg(long, default_value_t = 160_000)]
        rate: u64,
        /// Length of the paced phase.
        #[arg(long, default_value = "20s", value_parser = parse_duration)]
        paced: Duration,
    },
    /// Wire codec: bytes per CAN frame at 100 ms and 1 s batches beside zstd -3 and xz -9 of
    /// the candump text, encode/decode speed, and a full lossless check.
    Codec {
        /// Print one JSON object only (without it: a summary on stderr, the JSON pretty on stdout).
        #[arg(long)]
        json: bool,
        /// The candump log to encode (default: the RAV4 capture in ../shared/data).
        #[arg(long, value_name = "FILE")]
        input: Option<PathBuf>,
        /// Minimum time of each speed measurement.
        #[arg(long, default_value = "2s", value_parser = parse_duration)]
        min_time: Duration,
        /// zstd level of the columnar codec (the agent uses 3).
        #[arg(long, default_value_t = crate::codec::columnar::DEFAULT_LEVEL, allow_hyphen_values = true)]
        level: i32,
    },
    /// Chaos: the real agent, a real Mosquitto, the simulated track with three modems and
    /// links, 1 kHz synthetic channels, the RAV4 replay, GPS and a line sensor, under random
    /// kills, torn queue tails, broker restarts, link blackholes / resets / flaps, a full disk
    /// (needs root), malformed input everywhere and SIGHUP reloads; then an exactly-once check
    /// of what the receiver wrote. Run it with the release binary.
    Chaos {
        /// Print one JSON object only (without it: a summary on stderr, the JSON pretty on stdout).
        #[arg(long)]
        json: bool,
        /// Minutes of faults (the drain and the checks come after); fractions allowed.
        #[arg(long, default_value_t = 10.0)]
        minutes: f64,
        /// Seed of the fault plan (default: from the clock; reported either way).
        #[arg(long)]
        seed: Option<u64>,
        /// Working directory, kept afterwards (default: a temporary one, removed).
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
        /// Synthetic channels in all (split over three sources).
        #[arg(long, default_value_t = 300)]
        channels: u16,
        /// Samples per second per synthetic channel.
        #[arg(long, default_value_t = 1000)]
        rate_hz: u32,
        /// The candump log replayed (default: the RAV4 capture in ../shared/data).
        #[arg(long, value_name = "FILE")]
        candump: Option<PathBuf>,
    },
    /// Size and resource use as deployed: stripped release binaries (amd64, arm64), RSS and CPU
    /// of a real daemon idle and with 160,000 CAN frames/s through the whole pipeline to a
    /// local Mosquitto. Run it with the release binary for the deployed figures.
    Footprint {
        /// Print one JSON object only.
        #[arg(long)]
        json: bool,
        /// Stripped amd64 release binary (default: target/x86_64-unknown-linux-gnu/release/pitlink).
        #[arg(long, value_name = "FILE")]
        amd64: Option<PathBuf>,
        /// Stripped arm64 release binary (default: target/aarch64-unknown-linux-gnu/release/pitlink).
        #[arg(long, value_name = "FILE")]
        arm64: Option<PathBuf>,
        /// The candump log replayed (looped; default: the RAV4 capture in ../shared/data).
        #[arg(long, value_name = "FILE")]
        input: Option<PathBuf>,
        /// Frames per second of the loaded phase.
        #[arg(long, default_value_t = 160_000)]
        rate: u64,
        /// Length of the idle measurement.
        #[arg(long, default_value = "10s", value_parser = parse_duration)]
        idle: Duration,
        /// Length of the loaded measurement.
        #[arg(long, default_value = "20s", value_parser = parse_duration)]
        loaded: Duration,
        /// Settling time of each daemon before it is measured.
        #[arg(long, default_value = "3s", value_parser = parse_duration)]
        settle: Duration,
        /// Scratch directory (default: the system temp directory).
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
    /// Tower policy against the modems' own sticky cell selection: laps of a track scenario
    /// in simulated time; goodput, stall time and switches of each, and per lap with learning.
    Track {
        /// Print one JSON object only.
        #[arg(long)]
        json: bool,
        /// Scenario file (docs/scenario.md; default: the shipped ring).
        #[arg(long, value_name = "FILE")]
        scenario: Option<PathBuf>,
        /// Laps per run.
        #[arg(long, default_value_t = 3)]
        laps: u32,
        /// Live load in Mbit/s: the bonded uplink is stalled while it can carry less.
        #[arg(long, default_value_t = 8.0)]
        live_mbit_s: f64,
        /// Print one line per simulated second (cells, locks, capacities) to stderr.
        #[arg(long)]
        trace: bool,
        /// Write the policy run's inputs (fixes, link figures, cell reports) as JSON lines.
        #[arg(long, value_name = "FILE")]
        record: Option<PathBuf>,
    },
    /// Failover of the bonded uplink: the daemon with three emulated links, the busiest one
    /// blackholed again and again; time until its batches are acknowledged elsewhere, losses
    /// and duplicates at the receiver.
    Failover {
        /// Print one JSON object only.
        #[arg(long)]
        json: bool,
        /// Use this broker (HOST:PORT) instead of starting Mosquitto.
        #[arg(long, value_name = "ADDR")]
        broker: Option<std::net::SocketAddr>,
        /// Scratch directory parent (default: the system temp directory).
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
        #[arg(long, default_value_t = 20)]
        blackholes: u32,
        /// How long each blackhole lasts.
        #[arg(long, default_value = "1s", value_parser = parse_duration)]
        hold: Duration,
        /// Time between a blackhole's end and the next one.
        #[arg(long, default_value = "1s", value_parser = parse_duration)]
        gap: Duration,
        /// Links as MBIT:RTT_MS,...
        #[arg(long, default_value = "20:30,10:60,10:100", value_parser = crate::bench::uplink::parse_links)]
        links: std::vec::Vec<crate::bench::uplink::LinkSpec>,
        /// Synthetic channels at --rate-hz.
        #[arg(long, default_value_t = 300)]
        channels: u16,
        #[arg(long, default_value_t = 1000)]
        rate_hz: u32,
    },
    /// Bonding efficiency: links of the given capacities and RTTs under an offered load above
    /// their sum; goodput, efficiency and per-link shares, beside the fastest link alone.
    Bond {
        /// Print one JSON object only.
        #[arg(long)]
        json: bool,
        /// Use this broker (HOST:PORT) instead of starting Mosquitto.
        #[arg(long, value_name = "ADDR")]
        broker: Option<std::net::SocketAddr>,
        /// Scratch directory parent (default: the system temp directory).
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
        /// Links as MBIT:RTT_MS,... (capacity in Mbit/s, round-trip time in ms).
        #[arg(long, default_value = "2:30,5:60,10:150", value_parser = crate::bench::uplink::parse_links)]
        links: std::vec::Vec<crate::bench::uplink::LinkSpec>,
        /// Measured window (after --warmup).
        #[arg(long, default_value = "20s", value_parser = parse_duration)]
        duration: Duration,
        #[arg(long, default_value = "5s", value_parser = parse_duration)]
        warmup: Duration,
        /// Offered load over the capacity sum.
        #[arg(long, default_value_t = 1.3)]
        overload: f64,
        /// Skip the single-link baseline.
        #[arg(long)]
        no_baseline: bool,
        /// Samples per batch at most (default: the daemon's, [batch] max_samples).
        #[arg(long)]
        max_samples: Option<usize>,
    },
    /// Live first: a pre-filled backlog drains while live data flows; live latency at the
    /// receiver and the drain time.
    Live {
        /// Print one JSON object only.
        #[arg(long)]
        json: bool,
        /// Use this broker (HOST:PORT) instead of starting Mosquitto.
        #[arg(long, value_name = "ADDR")]
        broker: Option<std::net::SocketAddr>,
        /// Scratch directory parent (default: the system temp directory).
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
        /// Backlog written into the queue before the start, in time of source data.
        #[arg(long, default_value = "10m", value_parser = parse_duration)]
        backlog: Duration,
        /// Links as MBIT:RTT_MS,...
        #[arg(long, default_value = "10:60,10:60,10:60", value_parser = crate::bench::uplink::parse_links)]
        links: std::vec::Vec<crate::bench::uplink::LinkSpec>,
        /// Synthetic channels at --rate-hz.
        #[arg(long, default_value_t = 20)]
        channels: u16,
        #[arg(long, default_value_t = 1000)]
        rate_hz: u32,
        /// Live data flows this long after the backlog drained.
        #[arg(long, default_value = "5s", value_parser = parse_duration)]
        tail: Duration,
        /// Give up waiting for the drain after this long.
        #[arg(long, default_value = "5m", value_parser = parse_duration)]
        max_time: Duration,
    },
    /// Child of `bench queue`: writes the queue that is SIGKILLed for the recovery figure.
    #[command(hide = true)]
    QueueWriter {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long)]
        mib: u64,
        #[arg(long, default_value_t = 16)]
        record_kib: usize,
        #[arg(long, default_value_t = 100)]
        flush_ms: u64,
        /// Stop by itself this long after announcing the volume.
        #[arg(long, default_value = "60s", value_parser = parse_duration)]
        linger: Duration,
    },
    /// Child of `bench crash`: appends and reports until it is SIGKILLed.
    #[command(hide = true)]
    CrashWriter {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long)]
        counter_base: u64,
        #[arg(long, default_value_t = 4)]
        batch_kib: usize,
        #[arg(long, default_value_t = 100)]
        flush_ms: u64,
        /// Stop by itself after this long.
        #[arg(long, default_value = "60s", value_parser = parse_duration)]
        max_time: Duration,
    },
}

#[derive(Debug, clap::Args)]
pub struct ReceiveArgs {
    /// Broker: HOST:PORT or unix:/PATH.
    #[arg(long, default_value = "127.0.0.1:1883")]
    pub broker: String,
    /// Topic filter to subscribe to.
    #[arg(long, default_value = "pitlink/+/batch")]
    pub topic: String,
    /// MQTT client id; the broker keeps this receiver's session (and queued batches) under it.
    #[arg(long, default_value = "pitlink-receive")]
    pub client_id: String,
    /// Output JSONL file (appended); '-' for stdout.
    #[arg(long, short, default_value = "-")]
    pub out: PathBuf,
    /// Write CSV files under DIR instead of JSONL: one per channel, CAN id or decoded message,
    /// plus <vehicle>/events.csv (see docs/receive.md).
    #[arg(long, value_name = "DIR", conflicts_with = "out")]
    pub csv: Option<PathBuf>,
    /// State file (dedup, accounting, output lengths), saved atomically; batches are
    /// acknowledged only once it is durable. Default: <OUT>.state beside a file output; with
    /// stdout and no --state the state lives in memory only (at-least-once across restarts).
    #[arg(long, value_name = "PATH")]
    pub state: Option<PathBuf>,
    /// Runs per vehicle kept in full detail; older ones are folded into totals and a run
    /// low-water mark (memory bound, see docs/receive.md).
    #[arg(long, default_value_t = 16)]
    pub max_runs: usize,
    /// Sequence ranges per run before its low-water mark moves up (memory bound).
    #[arg(long, default_value_t = 1024)]
    pub max_ranges: usize,
    /// Decode the CAN frames of source BUS with the DBC FILE: frame lines get "msg" and
    /// "signals" (repeatable, one DBC per source).
    #[arg(long, value_name = "BUS=FILE", value_parser = parse_dbc_spec)]
    pub dbc: Vec<(String, PathBuf)>,
    /// MQTT protocol version: 3 (3.1.1) or 5. With 5 the session never expires, so the broker
    /// keeps unacknowledged batches while the receiver is away.
    #[arg(long, default_value = "3", value_name = "3|5")]
    pub mqtt_version: crate::receive::MqttVersion,
    /// CA certificate (PEM) to connect with TLS.
    #[arg(long, value_name = "PEM")]
    pub ca: Option<PathBuf>,
    /// Client certificate (PEM) for mutual TLS, with --key.
    #[arg(long, value_name = "PEM", requires = "key")]
    pub cert: Option<PathBuf>,
    /// Client private key (PEM) for mutual TLS, with --cert.
    #[arg(long, value_name = "PEM", requires = "cert")]
    pub key: Option<PathBuf>,
    #[arg(long)]
    pub username: Option<String>,
    #[arg(long, requires = "username")]
    pub password: Option<String>,
    /// Stop after this long (e.g. 30s).
    #[arg(long, value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// Stop once no batch arrived for this long (after the first one).
    #[arg(long, value_parser = parse_duration)]
    pub idle_exit: Option<Duration>,
    /// Print the closing summary as one JSON object on stderr's last line instead of text.
    #[arg(long)]
    pub json: bool,
}

/// A benchmark's figures: one JSON line with `--json`; otherwise the summary on stderr and the
/// JSON pretty on stdout.
fn print_bench<T: serde::Serialize>(
    json: bool,
    r: &T,
    summary: impl FnOnce() -> String,
) -> Result<ExitCode> {
    if json {
        println!("{}", serde_json::to_string(r)?);
    } else {
        eprint!("{}", summary());
        println!("{}", serde_json::to_string_pretty(r)?);
    }
    Ok(ExitCode::SUCCESS)
}

fn parse_dbc_spec(s: &str) -> Result<(String, PathBuf), String> {
    match s.split_once('=') {
        Some((bus, file)) if !bus.is_empty() && !file.is_empty() => {
            Ok((bus.to_string(), PathBuf::from(file)))
        }
        _ => Err(format!(
            "'{s}': expected BUS=FILE, the source name and its DBC (example: can0=car.dbc)"
        )),
    }
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("'{s}': {e} (examples: 500ms, 20s, 2m)"))
}

/// Logs to the systemd journal (with priorities and fields) when the process runs under
/// systemd with its output connected to the journal (`JOURNAL_STREAM`), else to stderr.
/// `PITLINK_LOG` sets the filter (`info`, `pitlink=debug`, ...).
fn init_logging(default: &str) {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let filter = || {
        tracing_subscriber::EnvFilter::try_from_env("PITLINK_LOG")
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default))
    };
    if std::env::var_os("JOURNAL_STREAM").is_some()
        && let Ok(journal) = tracing_journald::layer()
    {
        let journal = journal.with_syslog_identifier("pitlink".into());
        if tracing_subscriber::registry()
            .with(filter())
            .with(journal)
            .try_init()
            .is_ok()
        {
            return;
        }
    }
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter())
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .try_init();
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

/// Entry point of the binary.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match dispatch(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("pitlink: error: {e:#}");
            ExitCode::from(1)
        }
    }
}

/// Fetches the status and prints one view of it: JSON or text.
fn show(
    socket: Option<PathBuf>,
    config: &std::path::Path,
    json: bool,
    view: impl FnOnce(&crate::diag::Status) -> (serde_json::Result<serde_json::Value>, String),
) -> Result<ExitCode> {
    let st = crate::diag::fetch(&status_socket(socket, config))?;
    let (value, text) = view(&st);
    if json {
        println!("{}", value?);
    } else {
        print!("{text}");
    }
    Ok(ExitCode::SUCCESS)
}

/// The diagnostics socket: `--socket`, else the config's `[diag] socket`, else the default.
fn status_socket(socket: Option<PathBuf>, config: &std::path::Path) -> PathBuf {
    socket
        .or_else(|| Config::load(config).ok().map(|c| c.diag.socket))
        .unwrap_or_else(|| crate::config::DiagConfig::default().socket)
}

fn load_config(path: &std::path::Path) -> Result<Config, ExitCode> {
    Config::load(path).map_err(|e| {
        eprintln!("{e}");
        ExitCode::from(2)
    })
}

fn dispatch(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::CheckConfig { json } => {
            let cfg = match load_config(&cli.config) {
                Ok(c) => c,
                Err(code) => return Ok(code),
            };
            if json {
                println!("{}", serde_json::to_string_pretty(&cfg)?);
            } else {
                println!(
                    "{}: ok (vehicle {}, {} source(s), {} link(s), queue {} capped at {} MiB)",
                    cli.config.display(),
                    cfg.vehicle,
                    cfg.sources.len(),
                    cfg.links.len(),
                    cfg.queue.dir.display(),
                    cfg.queue.max_mb
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Decode(a) => crate::decode::run(&a),
        Command::Run => {
            let cfg = match load_config(&cli.config) {
                Ok(c) => c,
                Err(code) => return Ok(code),
            };
            init_logging("info");
            runtime()?.block_on(run_daemon(cfg, &cli.config))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Status { json, socket } => {
            let st = crate::diag::fetch(&status_socket(socket, &cli.config))?;
            if json {
                println!("{}", serde_json::to_string(&st)?);
            } else {
                print!("{}", crate::diag::render(&st));
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Links { json, socket } => {
            let st = crate::diag::fetch(&status_socket(socket, &cli.config))?;
            let links = crate::diag::links::Links::of(&st);
            if json {
                println!("{}", serde_json::to_string(&links)?);
            } else {
                print!("{}", links.render());
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Sources { json, socket } => show(socket, &cli.config, json, |st| {
            (
                serde_json::to_value(&st.sources),
                crate::diag::render_sources(st),
            )
        }),
        Command::Queue { json, socket } => show(socket, &cli.config, json, |st| {
            (
                serde_json::to_value(&st.queue),
                crate::diag::render_queue(st),
            )
        }),
        Command::Tail {
            spec,
            dbc,
            json,
            count,
            socket,
        } => {
            let path = status_socket(socket, &cli.config);
            let mut out = std::io::stdout().lock();
            match crate::diag::tail::run(&path, &spec, dbc.as_deref(), json, count, &mut out) {
                // A closed pipe (`| head`) ends the tail quietly.
                Err(e)
                    if e.downcast_ref::<std::io::Error>()
                        .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe) =>
                {
                    Ok(ExitCode::SUCCESS)
                }
                r => r.map(|()| ExitCode::SUCCESS),
            }
        }
        Command::Top {
            interval,
            socket,
            count,
        } => {
            let path = status_socket(socket, &cli.config);
            let tty = std::io::IsTerminal::is_terminal(&std::io::stdout());
            let mut n = 0u64;
            loop {
                let screen = match crate::diag::fetch(&path) {
                    Ok(st) => {
                        let mut t = crate::diag::render(&st);
                        if !st.towers.modems.is_empty() {
                            t.push('\n');
                            t.push_str(&crate::diag::towers::render(&st));
                        }
                        t
                    }
                    Err(e) => format!(
                        "{e:#}\n(retrying every {})\n",
                        humantime::format_duration(interval)
                    ),
                };
                if tty {
                    print!("\x1b[H\x1b[2J");
                }
                print!("{screen}");
                use std::io::Write as _;
                std::io::stdout().flush()?;
                n += 1;
                if count.is_some_and(|c| n >= c) {
                    break;
                }
                std::thread::sleep(interval);
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Towers { json, socket } => {
            let st = crate::diag::fetch(&status_socket(socket, &cli.config))?;
            if json {
                let mut t = serde_json::to_value(&st.towers)?;
                // Each modem's radio beside its cells.
                if let Some(mods) = t.get_mut("modems").and_then(|m| m.as_array_mut()) {
                    for m in mods {
                        let radio = st
                            .links
                            .iter()
                            .find(|l| Some(l.name.as_str()) == m["link"].as_str())
                            .and_then(|l| l.radio.clone());
                        m["radio"] = serde_json::to_value(radio)?;
                    }
                }
                println!("{t}");
            } else {
                print!("{}", crate::diag::towers::render(&st));
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Receive(a) => {
            let a = *a;
            init_logging("info");
            let broker = BrokerAddr::parse(&a.broker).map_err(anyhow::Error::msg)?;
            let tls = match &a.ca {
                Some(ca) => Some(crate::mqtt::tls_config(&TlsFiles {
                    ca: ca.clone(),
                    client: a.cert.clone().zip(a.key.clone()),
                })?),
                None => None,
            };
            let out = (a.out.as_os_str() != "-").then(|| a.out.clone());
            let state = a.state.clone().or_else(|| {
                a.csv
                    .as_deref()
                    .or(out.as_deref())
                    .map(crate::receive::state::default_path)
            });
            if state.is_none() {
                tracing::warn!(
                    "no --state: dedup and accounting live in memory only, so after a restart re-delivered batches may be written to stdout again"
                );
            }
            let opts = crate::receive::ReceiveOptions {
                broker,
                topic: a.topic,
                client_id: a.client_id,
                out,
                csv: a.csv.clone(),
                state,
                limits: crate::receive::Limits {
                    max_runs: a.max_runs,
                    max_ranges: a.max_ranges,
                },
                dbc: a.dbc.clone(),
                mqtt_version: a.mqtt_version,
                tls,
                credentials: a.username.zip(a.password),
                duration: a.duration,
                idle_exit: a.idle_exit,
            };
            let summary = runtime()?.block_on(async move {
                let stop = tokio_util::sync::CancellationToken::new();
                let s2 = stop.clone();
                tokio::spawn(async move {
                    wait_for_signal().await;
                    s2.cancel();
                });
                let (tx, _rx) = tokio::sync::watch::channel(Default::default());
                crate::receive::run(opts, stop, tx).await
            })?;
            if a.json {
                eprintln!("{}", serde_json::to_string(&summary)?);
            } else {
                eprint!("{}", crate::receive::render_summary(&summary));
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Bench(BenchCmd::Queue {
            json,
            mib,
            max_time,
            dir,
            record_kib,
            recovery_mib,
        }) => {
            let recovery = match recovery_mib {
                0 => None,
                mib => Some(crate::bench::RecoveryOptions {
                    exe: std::env::current_exe().context("cannot find the pitlink executable")?,
                    mib,
                }),
            };
            let r = crate::bench::queue(&crate::bench::QueueBenchOptions {
                mib,
                max_time,
                dir,
                record_bytes: record_kib.max(1) << 10,
                flush: Duration::from_millis(100),
                recovery,
            })?;
            print_bench(json, &r, String::new)
        }
        Command::Bench(BenchCmd::Crash {
            json,
            kills,
            dir,
            flush_ms,
            batch_kib,
            seed,
        }) => {
            let r = crate::bench::crash::crash(&crate::bench::crash::CrashBenchOptions {
                exe: std::env::current_exe().context("cannot find the pitlink executable")?,
                kills,
                dir,
                flush: Duration::from_millis(flush_ms.max(1)),
                batch_bytes: batch_kib.max(1) << 10,
                seed: seed.unwrap_or_else(crate::bench::crash::clock_seed),
                kill_after_ms: (20, 300),
            })?;
            print_bench(json, &r, || crate::bench::crash::render(&r))
        }
        Command::Bench(BenchCmd::Ingest {
            json,
            input,
            dir,
            flat_out,
            rate,
            paced,
        }) => {
            let input = match input {
                Some(p) => p,
                None => crate::bench::ingest::default_input()?,
            };
            let r = crate::bench::ingest::ingest(&crate::bench::ingest::IngestOptions {
                input,
                dir,
                flat_out,
                paced_rate: rate.max(1),
                paced,
                window: Duration::from_millis(100),
            })?;
            print_bench(json, &r, || crate::bench::ingest::render(&r))
        }
        Command::Bench(BenchCmd::Codec {
            json,
            input,
            min_time,
            level,
        }) => {
            let input = match input {
                Some(p) => p,
                None => crate::bench::ingest::default_input()?,
            };
            let r = crate::bench::codec::codec(&crate::bench::codec::CodecOptions {
                input,
                min_time,
                level,
            })?;
            print_bench(json, &r, || crate::bench::codec::render(&r))
        }
        Command::Bench(BenchCmd::Chaos {
            json,
            minutes,
            seed,
            dir,
            channels,
            rate_hz,
            candump,
        }) => {
            use crate::bench::chaos as c;
            init_logging("error");
            if !(minutes > 0.0 && minutes <= 24.0 * 60.0) {
                anyhow::bail!(
                    "--minutes {minutes}: give a positive number of minutes (at most a day)"
                );
            }
            let opts = c::ChaosOptions {
                duration: Duration::from_secs_f64(minutes * 60.0),
                seed,
                dir,
                channels: channels.clamp(3, 4096),
                rate_hz: rate_hz.clamp(1, 10_000),
                candump,
                progress: true,
            };
            let r = runtime()?.block_on(c::chaos(&opts))?;
            print_bench(json, &r, || c::render(&r))
        }
        Command::Bench(BenchCmd::Footprint {
            json,
            amd64,
            arm64,
            input,
            rate,
            idle,
            loaded,
            settle,
            dir,
        }) => {
            let input = match input {
                Some(p) => p,
                None => crate::bench::ingest::default_input()?,
            };
            let r =
                crate::bench::footprint::footprint(&crate::bench::footprint::FootprintOptions {
                    amd64,
                    arm64,
                    input,
                    rate,
                    idle,
                    loaded,
                    settle,
                    dir,
                })?;
            print_bench(json, &r, || crate::bench::footprint::render(&r))
        }
        Command::Bench(BenchCmd::Track {
            json,
            scenario,
            laps,
            live_mbit_s,
            trace,
            record,
        }) => {
            let r = crate::bench::track::track(&crate::bench::track::TrackOptions {
                scenario,
                laps: laps.max(1),
                live_mbit_s,
                trace,
                record,
                ..Default::default()
            })?;
            print_bench(json, &r, || crate::bench::track::render(&r))
        }
        Command::Bench(BenchCmd::Failover {
            json,
            broker,
            dir,
            blackholes,
            hold,
            gap,
            links,
            channels,
            rate_hz,
        }) => {
            use crate::bench::uplink as u;
            init_logging("error");
            let opts = u::FailoverOptions {
                broker,
                dir,
                blackholes,
                hold,
                gap,
                links,
                source: u::SourceSpec {
                    channels: channels.clamp(1, 4096),
                    rate_hz: rate_hz.max(1),
                    waveform: sensor_drivers::synthetic::Waveform::Sine,
                },
                ..Default::default()
            };
            let r = runtime()?.block_on(u::failover(&opts))?;
            print_bench(json, &r, || u::render_failover(&r))
        }
        Command::Bench(BenchCmd::Bond {
            json,
            broker,
            dir,
            links,
            duration,
            warmup,
            overload,
            no_baseline,
            max_samples,
        }) => {
            use crate::bench::uplink as u;
            init_logging("error");
            let opts = u::BondOptions {
                broker,
                dir,
                links,
                duration,
                warmup,
                overload: overload.clamp(0.1, 10.0),
                baseline: !no_baseline,
                max_samples,
            };
            let r = runtime()?.block_on(u::bond(&opts))?;
            print_bench(json, &r, || u::render_bond(&r))
        }
        Command::Bench(BenchCmd::Live {
            json,
            broker,
            dir,
            backlog,
            links,
            channels,
            rate_hz,
            tail,
            max_time,
        }) => {
            use crate::bench::uplink as u;
            init_logging("error");
            let opts = u::LiveOptions {
                broker,
                dir,
                backlog,
                links,
                source: u::SourceSpec {
                    channels: channels.clamp(1, 4096),
                    rate_hz: rate_hz.max(1),
                    waveform: sensor_drivers::synthetic::Waveform::Sine,
                },
                tail,
                max_time,
            };
            let r = runtime()?.block_on(u::live(&opts))?;
            print_bench(json, &r, || u::render_live(&r))
        }
        Command::Bench(BenchCmd::QueueWriter {
            dir,
            mib,
            record_kib,
            flush_ms,
            linger,
        }) => {
            die_with_parent();
            crate::bench::queue_writer(
                &crate::bench::QueueWriterOptions {
                    dir,
                    mib,
                    record_bytes: record_kib.max(1) << 10,
                    flush: Duration::from_millis(flush_ms),
                    linger,
                },
                &mut std::io::stdout().lock(),
            )?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Bench(BenchCmd::CrashWriter {
            dir,
            counter_base,
            batch_kib,
            flush_ms,
            max_time,
        }) => {
            die_with_parent();
            crate::bench::crash::crash_writer(
                &crate::bench::crash::CrashWriterOptions {
                    dir,
                    counter_base,
                    batch_bytes: batch_kib.max(1) << 10,
                    flush: Duration::from_millis(flush_ms.max(1)),
                    every: Duration::from_millis(1),
                    max_time,
                },
                &mut std::io::stdout().lock(),
            )?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Modem(ModemCmd::Parse {
            json,
            qeng_sinr_fifths,
        }) => {
            use std::io::Read;
            let mut input = Vec::new();
            std::io::stdin()
                .read_to_end(&mut input)
                .context("cannot read stdin")?;
            let opts = modem_hal::at::parse::ParseOptions {
                qeng_lte_sinr: if qeng_sinr_fifths {
                    modem_hal::at::parse::SinrScale::Fifths
                } else {
                    modem_hal::at::parse::SinrScale::Db
                },
                ..Default::default()
            };
            let parsed =
                modem_hal::at::parse::parse_text_with(&String::from_utf8_lossy(&input), opts);
            if json {
                println!("{}", serde_json::to_string(&parsed)?);
            } else {
                print!("{}", parsed.report);
                for u in &parsed.unparsed {
                    println!("unparsed: line {}: {} ({})", u.line, u.text, u.error);
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Modem(ModemCmd::Sim {
            scenario,
            dir,
            speed,
            profile,
            reattach,
            latency_scale,
            broker,
            duration,
            json,
        }) => {
            init_logging("warn");
            let tmp;
            let dir = match dir {
                Some(d) => d,
                None => {
                    tmp = tempfile::Builder::new()
                        .prefix("pitlink-modems-")
                        .tempdir()
                        .context("cannot create a temporary directory")?;
                    tmp.path().to_path_buf()
                }
            };
            let opts = crate::demo::modems::SimOptions {
                scenario,
                dir,
                speed,
                profile: if profile == "ec25" {
                    modem_hal::sim::modem::Profile::Ec25
                } else {
                    modem_hal::sim::modem::Profile::Rm520n
                },
                reattach,
                latency_scale,
                broker,
                duration,
                json,
            };
            runtime()?.block_on(crate::demo::modems::run(opts, wait_for_signal()))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Modem(ModemCmd::Link(args)) => {
            use crate::diag::modem::Action;
            let args = match LinkModemArgs::try_parse_from(&args) {
                Ok(a) => a,
                Err(e) => e.exit(),
            };
            let (action, json) = match args.action {
                LinkModemAction::Info { json } => (Action::Info, json),
                LinkModemAction::Cells { json } => (Action::Cells, json),
                LinkModemAction::Release { json } => (Action::Release, json),
                LinkModemAction::Reselect { json } => (Action::Reselect, json),
                LinkModemAction::Lock {
                    earfcn,
                    pci,
                    arfcn,
                    scs,
                    band,
                    json,
                } => match (earfcn, arfcn, scs, band) {
                    (Some(earfcn), None, _, _) => (Action::LockLte { earfcn, pci }, json),
                    (None, Some(arfcn), Some(scs_khz), Some(band)) => (
                        Action::LockNr {
                            pci,
                            arfcn,
                            scs_khz,
                            band,
                        },
                        json,
                    ),
                    _ => anyhow::bail!(
                        "lock needs --earfcn and --pci (LTE), or --pci, --arfcn, --scs and --band (NR)"
                    ),
                },
            };
            let cfg = match load_config(&cli.config) {
                Ok(c) => c,
                Err(code) => return Ok(code),
            };
            let Some(link) = cfg.links.iter().find(|l| l.name == args.link) else {
                anyhow::bail!(
                    "no link '{}' in {}; the links are: {}",
                    args.link,
                    cli.config.display(),
                    cfg.links
                        .iter()
                        .map(|l| l.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                );
            };
            let out = runtime()?.block_on(crate::diag::modem::run(link, &action, json))?;
            print!("{out}");
            Ok(ExitCode::SUCCESS)
        }
        Command::Demo {
            duration,
            candump,
            dbc,
            json,
            keep,
        } => {
            init_logging("warn");
            let can = match candump {
                Some(log) => Some((log, dbc)),
                None => crate::demo::default_can(),
            };
            let summary = runtime()?.block_on(crate::demo::run(crate::demo::DemoOptions {
                duration,
                can,
                keep,
                live: true,
            }))?;
            if json {
                eprint!("{}", crate::demo::render(&summary));
                crate::demo::print_json(&summary)?;
            } else {
                print!("{}", crate::demo::render(&summary));
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// A bench child goes when the bench that started it goes (it never outlives a killed bench).
fn die_with_parent() {
    let _ = nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL);
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}

/// Runs the daemon until SIGTERM or SIGINT, or until every source has ended. SIGHUP re-reads
/// `path`: a valid new configuration replaces the running pipeline (sources, links,
/// thresholds; the queue on disk carries the undelivered data over, and the new run re-sends
/// it); an invalid one is rejected with one log line and the running configuration stays.
/// Under systemd (`NOTIFY_SOCKET`) it sends READY=1 once the configuration is valid and the
/// queue recovered, STATUS= lines, WATCHDOG=1 while the pipeline progresses, RELOADING=1 and
/// READY=1 around a reload, and STOPPING=1.
async fn run_daemon(mut cfg: Config, path: &std::path::Path) -> Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hup = signal(SignalKind::hangup()).context("SIGHUP handler")?;
    let mut term = signal(SignalKind::terminate()).context("SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("SIGINT handler")?;
    let mut notifier = match crate::daemon::notify::Notifier::from_env() {
        Ok(n) => n,
        Err(e) => {
            tracing::warn!("NOTIFY_SOCKET unusable, no service notifications: {e}");
            None
        }
    };
    loop {
        let opts = crate::daemon::StartOptions {
            // Hidden test hook of the watchdog's test (a stuck core); see StartOptions.
            stall_core_after: std::env::var("PITLINK_TEST_STALL_CORE_AFTER_MS")
                .ok()
                .and_then(|v| v.parse().ok())
                .map(Duration::from_millis),
            ..crate::daemon::StartOptions::default()
        };
        let daemon = crate::daemon::start(cfg.clone(), opts)?;
        tracing::info!("pitlink running (pid {})", std::process::id());
        // The config is valid and the queue recovered: tell systemd (Type=notify) we are up.
        let notify_stop = tokio_util::sync::CancellationToken::new();
        let notify_task = notifier.take().map(|n| {
            crate::daemon::notify::spawn(
                n,
                daemon.status.clone(),
                crate::daemon::notify::watchdog_from_env(),
                Duration::from_millis(cfg.batch.window_ms),
                notify_stop.clone(),
            )
        });
        let stop = daemon.shutdown.clone();
        let mut done = Box::pin(daemon.wait());
        let next = loop {
            tokio::select! {
                r = &mut done => {
                    r?;
                    tracing::info!("every source has ended and the queue is drained");
                    notify_stop.cancel();
                    if let Some(task) = notify_task
                        && let Ok(n) = task.await
                    {
                        let _ = n.send("STOPPING=1\nSTATUS=every source has ended");
                    }
                    tracing::info!("pitlink stopped");
                    return Ok(());
                }
                _ = term.recv() => break None,
                _ = int.recv() => break None,
                _ = hup.recv() => match Config::load(path) {
                    Ok(new) if new == cfg => {
                        tracing::info!("SIGHUP: {} is unchanged", path.display());
                    }
                    Ok(new) => break Some(new),
                    Err(e) => tracing::error!("SIGHUP: {e}; keeping the running configuration"),
                },
            }
        };
        notify_stop.cancel();
        if let Some(task) = notify_task
            && let Ok(n) = task.await
        {
            let _ = n.send(if next.is_some() {
                "RELOADING=1\nSTATUS=reloading the configuration"
            } else {
                "STOPPING=1\nSTATUS=stopping: draining the pipeline"
            });
            notifier = Some(n);
        }
        match next {
            None => {
                tracing::info!("stopping: draining the pipeline");
                stop.cancel();
                done.await?;
                break;
            }
            Some(new) => {
                tracing::info!("SIGHUP: reloading {}", path.display());
                stop.cancel();
                done.await?;
                cfg = new;
                tracing::info!("configuration reloaded");
            }
        }
    }
    tracing::info!("pitlink stopped");
    Ok(())
}
