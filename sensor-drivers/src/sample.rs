//! The unit every source produces.

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

/// Counters every source keeps; shown by `pitlink status`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceCounters {
    /// Samples handed to the agent.
    pub samples: u64,
    /// Input that could not be parsed (counted, never fatal).
    pub parse_errors: u64,
    /// Samples the source had to drop (e.g. the agent could not keep up).
    pub drops: u64,
}
