//! pitlink: in-car telemetry agent.
//!
//! Data flows one way: sources → [`batch`] → [`codec`] → [`queue`] → [`bond`] (MQTT links) →
//! broker → [`receive`]. Acknowledgements flow back only as "batch X delivered" facts into the
//! queue. Every stage that decides is a sans-IO struct; the async shells in [`daemon`] do the IO.
//! See docs/ and DESIGN notes in the README.

pub mod batch;
pub mod bench;
pub mod bond;
pub mod cli;
pub mod codec;
pub mod config;
pub mod daemon;
pub mod decode;
pub mod demo;
pub mod diag;
pub mod mqtt;
pub mod queue;
pub mod ranges;
pub mod receive;
pub mod towers;

/// Microseconds since the Unix epoch, from the system clock. Only the async shells call this;
/// the sans-IO cores take `now` as an argument.
pub fn now_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}
