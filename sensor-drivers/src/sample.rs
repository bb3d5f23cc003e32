//! The units every source produces.

use crate::can::CanFrame;
use serde::{Deserialize, Serialize};

/// One numeric reading of one channel.
///
/// `t_us` is microseconds since the Unix epoch, stamped by the source at acquisition time.
/// `channel` is the channel's index within its source (names live in the source's config).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    pub t_us: u64,
    pub channel: u16,
    pub value: f64,
}

/// One timestamped CAN frame. `t_us` is µs since the Unix epoch (kernel RX timestamp when the
/// source has one, else the time the agent read it; for a replayed log, the recorded time).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimedFrame {
    pub t_us: u64,
    pub frame: CanFrame,
}

/// What a source hands to the agent: CAN frames or named numeric values.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub enum Reading {
    Frame(TimedFrame),
    Value(Sample),
}

impl From<Sample> for Reading {
    fn from(s: Sample) -> Reading {
        Reading::Value(s)
    }
}

impl From<TimedFrame> for Reading {
    fn from(f: TimedFrame) -> Reading {
        Reading::Frame(f)
    }
}

impl Reading {
    pub fn t_us(&self) -> u64 {
        match self {
            Reading::Frame(f) => f.t_us,
            Reading::Value(s) => s.t_us,
        }
    }
}

/// Counters every source keeps; shown by `pitlink status`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceCounters {
    /// Readings (frames or values) handed to the agent.
    pub readings: u64,
    /// Input that could not be parsed (counted, never fatal).
    pub parse_errors: u64,
    /// Input skipped on purpose (sentence types a source does not use, a fragment right after
    /// the device was opened); not an error.
    #[serde(default)]
    pub ignored: u64,
    /// Readings the source had to drop because the agent could not keep up.
    pub drops: u64,
    /// Readings lost before the source saw them (kernel receive queue, adapter buffer overrun).
    pub overruns: u64,
    /// Times the device was opened again after it failed or vanished.
    pub reconnects: u64,
    /// CAN error frames received (each also counted per class in `error_classes`).
    pub error_frames: u64,
    /// Error frames per class name (`bus_off`, `no_ack`, …); classes never seen are absent.
    pub error_classes: std::collections::BTreeMap<String, u64>,
    /// Whether the device is open right now.
    pub connected: bool,
    /// The last error the source hit (device, parse), if any.
    pub last_error: Option<String>,
}
